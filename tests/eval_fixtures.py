"""A tiny emissions folder (peaky synthetic log-probs, no model) and a tiny ARPA LM for the
evaluation tests and the notebooks test.

Layout written (what eval.cache.import_emissions reads): labels.json, manifest.tsv,
<split>/<id>.npy with (T, V) float32 log_softmax rows, 20 ms per frame.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from decoding_fixtures import QUARTZNET_LABELS, arpa_text

LABELS = list(QUARTZNET_LABELS)
BLANK = len(LABELS) - 1
FRAME_SHIFT_S = 0.02
# (id, reference, text the emission spells), deliberately not in id order (so a cache that mixes
# up the order of ids and arrays shows up as wrong WERs). Greedy errors are hand-counted:
#   dev-a:  0 + 1 D ("home") + 1 S ("world"->"word") + 1 I ("sir")    = 3 errors / 11 words
#   dev-b:  0 + 1 D ("ran")                                           = 1 error  / 5 words
#   test-a: 0 + 1 S ("dog"->"dot")                                    = 1 error  / 7 words
UTTERANCES = {
    "dev-a": [
        ("d3", "THE CAT SAT", "the cat sat"),
        ("d1", "A DOG RAN HOME", "a dog ran"),
        ("d4", "HELLO WORLD", "hello word"),
        ("d2", "GOOD DAY", "good day sir"),
    ],
    "dev-b": [
        ("e2", "THE CAT RAN", "the cat"),
        ("e1", "GOOD DOG", "good dog"),
    ],
    "test-a": [
        ("t2", "THE DOG RAN", "the dot ran"),
        ("t1", "A CAT SAT HOME", "a cat sat home"),
    ],
}
GREEDY_ERRORS = {"dev-a": (3, 11), "dev-b": (1, 5), "test-a": (1, 7)}
LM_WORDS = ["the", "cat", "sat", "a", "dog", "ran", "home", "hello", "world", "good", "day"]


def peaky_log_probs(text: str, rng: np.random.Generator) -> np.ndarray:
    """(T, V) float32 log-probs whose best path spells ``text``: each character 2 frames at
    ~0.9 probability followed by a blank frame; the rest of the mass spread at random."""
    frames = [BLANK]
    for ch in text:
        frames += [LABELS.index(ch)] * 2 + [BLANK]
    probs = rng.uniform(0.0, 1.0, size=(len(frames), len(LABELS)))
    probs /= probs.sum(axis=1, keepdims=True) / 0.1
    probs[np.arange(len(frames)), frames] += 0.9
    return np.log(probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def write_tiny_emissions(root: Path, seed: int = 0) -> Path:
    """Write the emissions folder under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-ctc"
    rows = ["split\tid\tnum_frames\taudio_seconds\treference"]
    for split, utts in UTTERANCES.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for utt_id, ref, spoken in utts:
            lp = peaky_log_probs(spoken, rng)
            np.save(folder / split / f"{utt_id}.npy", lp)
            rows.append(f"{split}\t{utt_id}\t{len(lp)}\t{len(lp) * FRAME_SHIFT_S:.3f}\t{ref}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps({
        "labels": LABELS, "blank_index": BLANK, "word_delimiter": " ",
        "frame_shift_seconds": FRAME_SHIFT_S}), encoding="utf-8")
    return folder


def write_tiny_arpa(path: Path) -> Path:
    """A bigram ARPA over LM_WORDS (+ <s>, </s>, <unk>): uniform unigrams, the word pairs of the
    references as bigrams (KenLM needs order >= 2)."""
    words = ["<unk>", "<s>", "</s>", *LM_WORDS]
    bigrams = ["<s> the", "<s> a", "the cat", "cat sat", "a dog", "dog ran", "ran home",
               "hello world", "good day", "sat </s>", "home </s>", "day </s>", "world </s>"]
    logp = round(-float(np.log10(len(words) - 1)), 4)
    path.write_text(arpa_text({w: (-99.0 if w == "<s>" else logp, -0.3) for w in words},
                              dict.fromkeys(bigrams, -0.3)), encoding="utf-8")
    return path
