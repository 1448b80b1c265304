"""Decoding speed, agreement and WER of our beam search vs pyctcdecode and C++/flashlight peers.

    python bench/decode_speed.py --beam-width 100 --repeat 3 --inputs real peaky random \
        --lm ../shared/lm/en-us-70k-3gram.arpa.gz --jobs 1

Every decoder decodes the same emissions with the same beam width and pruning, each in its own
forked process (so peak memory is its own: the rise of peak RSS over the process's RSS at start,
LM loading included). The decoders of one input set and LM are built one after the other, then
timed in turns, pass 1 of each before pass 2 of any, so that the host's drift moves them alike.
Each turn after the first runs one untimed pass before its timed one: the other decoders' turns
left the caches cold, a penalty of taking turns and not of the decoder (measured on the real
set: our beam's 50 ms passes took 37% more without the LM and 70% more with it, pyctcdecode's
1 s passes 4% more). The first pass is timed cold, as the first of a run.
Figures: ms of decoding per second of audio over the whole set (mean of all
repeats; the first pass alone, since repeats let cross-utterance LM caches warm up; the best
and the median pass; the same in CPU time, which another process's load disturbs less), speed
ratio vs pyctcdecode on best passes and on median passes, wall and CPU (> 1 = faster; the
machine may be shared: the fastest pass is the least disturbed, the median the typical one),
share of transcripts identical to
pyctcdecode's, corpus WER where references exist (eval.metrics after the default normaliser, as
eval/run.py scores), and for runs
without an LM the mean CTC log-likelihood of each transcript minus pyctcdecode's (search quality
where texts differ). Inputs:
- real: the QuartzNet emissions in ../shared/emissions/quartznet15x5-base-en (plain numpy reads).
- peaky: synthetic random words, one dominant label per frame (like real acoustic models).
- random: log_softmax of unit normal logits, the worst case for token pruning.
- corpus: synthetic peaky utterances with LibriSpeech's length distribution (bench/durations.py)
  and words drawn from the LM, a test-clean-sized set by default (2,620 utterances, 5.4 h;
  --corpus-utterances several sizes, --corpus-hours for the largest; smaller sets are its first
  utterances, so ms per audio second shows whether cost grows with the corpus).
- hama: the hama IPA phoneme emissions in ../shared/emissions/hama-phoneme (a second, unrelated
  model, V = 191), decoded into words through the IPA lexicon ../shared/lm/en-us-70k-3gram
  .ipa-lexicon.tsv; the reference peer there is flashlight-text's LexiconDecoder (pyctcdecode
  decodes no phonemes), and only decoders that take a lexicon run (beam, flashlight).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import peers  # bench/peers.py, beside this script
from durations import TEST_CLEAN, corpus_durations

from ctclab.core.atomic import atomic_write_text
from ctclab.core.logs import show_notes
from ctclab.core.memory import keep_freed_memory
from ctclab.core.normalize import DEFAULT_NORMALIZER
from ctclab.core.options import HelpFormatter, add_option_flags, given_options
from ctclab.core.progress import progress_bar
from ctclab.core.table import Table
from ctclab.decoders import Vocabulary, available_decoders
from ctclab.decoders.base import missing_requirement
from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.eval.metrics import corpus_score, score_utterance
from ctclab.lm.files import resolve_lm_path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTCLAB_SHARED", REPO.parent / "shared"))
EMISSIONS_DIR = SHARED / "emissions" / "quartznet15x5-base-en"
HAMA_DIR = SHARED / "emissions" / "hama-phoneme"
HAMA_LEXICON = SHARED / "lm" / "en-us-70k-3gram.ipa-lexicon.tsv"
DEFAULT_LM = SHARED / "lm" / "en-us-70k-3gram.arpa.gz"
OUT_FILE = REPO / "bench" / "out" / "decode_speed.json"
FRAME_SHIFT_S = 0.02  # QuartzNet: 20 ms per frame; synthetic inputs use the same
QUARTZNET_LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'", "<blank>"]
# Synthetic set sizes: peaky ~ the real set's size (94 utterances, ~165 frames each); random is
# small because pyctcdecode scores every (beam, token) pair in Python there (29 x 100 per frame).
PEAKY_UTTERANCES = 60
PEAKY_SHARPNESS = 8.0        # logit boost of the frame's label: p ~ 0.98, like real emissions
RANDOM_UTTERANCES = 3
RANDOM_FRAMES = 100
REFERENCE = "pyctcdecode"
INPUT_KINDS = ("real", "peaky", "random", "hama", "corpus")
DEFAULT_INPUTS = ("real", "peaky", "random")
# beam-kenlm: our beam scoring through KenLM instead of the array LM (LM runs only, as greedy
# only runs without an LM).
DEFAULT_DECODERS = ("beam", "beam-kenlm", "pyctcdecode", "ctc-beam-decoder", "flashlight",
                    "greedy")
# Per input set: the peer the speed ratio and agreement are taken against (default pyctcdecode),
# and on sets spelled through a lexicon the decoders that take one.
REFERENCES = {"hama": "flashlight"}
# Our beam decoders (the ones --device and --batch-size apply to).
OUR_BEAMS = ("beam", "beam-kenlm")
LEXICON_DECODERS = ("beam", "beam-kenlm", "flashlight")


@dataclass
class InputSet:
    """Emissions of one kind: (T_i, V) float32 log-probs, optional upper-case references."""

    name: str
    emissions: list[np.ndarray]
    references: list[str] | None
    audio_seconds: float
    vocab: Vocabulary | None = None      # None: the QuartzNet letters
    lexicon: Path | None = None          # pronunciation lexicon the words are spelled through

    @property
    def vocabulary(self) -> Vocabulary:
        return self.vocab if self.vocab is not None else quartznet_vocab()

    @property
    def reference(self) -> str:
        """The peer speed ratios and agreement are taken against on this set."""
        return REFERENCES.get(self.name, REFERENCE)


@dataclass
class Measure:
    """One decoder on one input set with or without the LM."""

    inputs: str
    lm: str
    decoder: str
    utterances: int = 0
    audio_seconds: float = 0.0
    load_s: float = 0.0
    ms_per_audio_s: float = float("nan")
    first_pass_ms_per_audio_s: float = float("nan")
    best_pass_ms_per_audio_s: float = float("nan")
    median_pass_ms_per_audio_s: float = float("nan")
    cpu_best_ms_per_audio_s: float = float("nan")     # CPU time of the process, best pass
    cpu_median_ms_per_audio_s: float = float("nan")
    peak_mib: float = float("nan")
    texts: list[str] = field(default_factory=list, repr=False)
    error: str = ""
    speed_vs_pyctcdecode: float = float("nan")
    median_speed_vs_pyctcdecode: float = float("nan")
    cpu_speed_vs_pyctcdecode: float = float("nan")
    cpu_median_speed_vs_pyctcdecode: float = float("nan")
    agreement: float = float("nan")
    wer: float = float("nan")
    delta_ln_p: float = float("nan")


def quartznet_vocab() -> Vocabulary:
    return Vocabulary.from_labels(QUARTZNET_LABELS, blank=len(QUARTZNET_LABELS) - 1, delimiter=" ")


def manifest_rows(root: Path) -> list[list[str]]:
    """The rows of ``root``/manifest.tsv below its header, split at tabs (split, id, ...)."""
    text = (root / "manifest.tsv").read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines()[1:]]


def load_real(root: Path) -> InputSet:
    """The shared QuartzNet emissions: labels.json, manifest.tsv, <split>/<id>.npy."""
    meta = json.loads((root / "labels.json").read_text())
    if meta["labels"] != QUARTZNET_LABELS:
        raise SystemExit(f"{root}/labels.json: unexpected labels {meta['labels']}")
    rows = manifest_rows(root)
    emissions = [np.load(root / split / f"{utt}.npy").astype(np.float32)
                 for split, utt, *_ in rows]
    return InputSet("real", emissions, [r[4].strip() for r in rows],
                    sum(float(r[3]) for r in rows))


def load_hama(root: Path, lexicon: Path) -> InputSet:
    """The shared hama phoneme emissions (labels.json: blank last, <wb> between words)."""
    meta = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    vocab = Vocabulary.from_labels(meta["labels"], blank=meta["blank_index"],
                                   delimiter=meta["word_delimiter"], unused=meta.get("unused"),
                                   units="phonemes")
    rows = manifest_rows(root)
    emissions = [np.load(root / split / f"{utt}.npy").astype(np.float32)
                 for split, utt, *_ in rows]
    return InputSet("hama", emissions, [r[4].strip() for r in rows],
                    sum(float(r[3]) for r in rows), vocab, lexicon)


def log_softmax(x: np.ndarray) -> np.ndarray:
    return (x - np.logaddexp.reduce(x, axis=1, keepdims=True)).astype(np.float32)


def make_peaky(vocab: Vocabulary, rng: np.random.Generator, count: int,
               lexicon: list[str] | None = None) -> InputSet:
    """Random words spelled with 1-3 frames per letter and 0-2 blanks between letters.

    Words are drawn from ``lexicon`` (the LM's unigrams, so that LM runs are meaningful) when
    given, else they are random letter strings.
    """
    letters = [i for i in vocab.emitting_ids if i != vocab.delimiter]
    emissions, refs = [], []
    for _ in range(count):
        if lexicon:
            picks = rng.choice(len(lexicon), rng.integers(3, 15))
            words = [[vocab.label_to_id[c] for c in lexicon[i]] for i in picks]
        else:
            words = [rng.choice(letters, rng.integers(2, 9)) for _ in range(rng.integers(3, 15))]
        path: list[int] = [vocab.blank] * int(rng.integers(2, 10))
        for w_index, word in enumerate(words):
            path += spell(vocab, rng, word, w_index > 0)
        path += [vocab.blank] * int(rng.integers(2, 10))
        emissions.append(peaky_emission(vocab, rng, path))
        refs.append(" ".join("".join(vocab.labels[c] for c in w) for w in words).upper())
    seconds = sum(len(e) for e in emissions) * FRAME_SHIFT_S
    return InputSet("peaky", emissions, refs, seconds)


def spell(vocab: Vocabulary, rng: np.random.Generator, word: list[int], after_word: bool
          ) -> list[int]:
    """A word's frames: delimiter frames before it (after another word), 1-3 frames per letter,
    0-2 blanks before each letter (at least 1 between repeated letters)."""
    path: list[int] = [vocab.delimiter] * int(rng.integers(1, 3)) if after_word else []
    for c_index, c in enumerate(word):
        gap = int(rng.integers(0, 3))
        if c_index and c == word[c_index - 1]:
            gap = max(gap, 1)  # a repeated letter needs a blank between
        path += [vocab.blank] * gap + [int(c)] * int(rng.integers(1, 4))
    return path


def peaky_emission(vocab: Vocabulary, rng: np.random.Generator, path: list[int]) -> np.ndarray:
    """(len(path), V) log-probs with the path's label dominant in each frame."""
    logits = rng.normal(size=(len(path), vocab.size))
    logits[np.arange(len(path)), path] += PEAKY_SHARPNESS
    return log_softmax(logits)


def make_corpus(vocab: Vocabulary, rng: np.random.Generator, count: int, hours: float,
                lexicon: list[str] | None) -> InputSet:
    """Peaky utterances (as make_peaky) with LibriSpeech-like lengths, ``hours`` of audio in
    all: words are added while they fit the drawn length, then blanks fill it."""
    frames = np.round(corpus_durations(rng, count, hours) / FRAME_SHIFT_S).astype(np.int64)
    letters = [i for i in vocab.emitting_ids if i != vocab.delimiter]
    emissions, refs = [], []
    for target in frames.tolist():
        words: list[list[int]] = []
        path: list[int] = [vocab.blank] * int(rng.integers(2, 10))
        while True:
            if lexicon:
                word = [vocab.label_to_id[c] for c in lexicon[int(rng.integers(len(lexicon)))]]
            else:
                word = [int(c) for c in rng.choice(letters, rng.integers(2, 9))]
            piece = spell(vocab, rng, word, bool(words))
            if words and len(path) + len(piece) + 2 > target:
                break
            words.append(word)
            path += piece
        path += [vocab.blank] * max(2, target - len(path))
        emissions.append(peaky_emission(vocab, rng, path))
        refs.append(" ".join("".join(vocab.labels[c] for c in w) for w in words).upper())
    seconds = sum(len(e) for e in emissions) * FRAME_SHIFT_S
    return InputSet("corpus", emissions, refs, seconds)


def subset(data: InputSet, count: int) -> InputSet:
    """The first ``count`` utterances of a set, named by their count."""
    emissions = data.emissions[:count]
    refs = None if data.references is None else data.references[:count]
    return InputSet(f"{data.name}-{count}", emissions, refs,
                    sum(len(e) for e in emissions) * FRAME_SHIFT_S)


def make_random(vocab: Vocabulary, rng: np.random.Generator, count: int) -> InputSet:
    emissions = [log_softmax(rng.normal(size=(RANDOM_FRAMES, vocab.size))) for _ in range(count)]
    return InputSet("random", emissions, None, count * RANDOM_FRAMES * FRAME_SHIFT_S)


def peaky_lexicon(lm_runs: list[tuple[str, Path | None]]) -> list[str] | None:
    """Lower-case a-z words of 2-10 letters from the LM's unigrams (None without an LM)."""
    lm_file = next((f for _, f in lm_runs if f is not None), None)
    if lm_file is None:
        return None
    words = peers.known_words(lm_file) or []
    return sorted(w for w in words if 2 <= len(w) <= 10 and w.isalpha() and w.isascii()
                  and w.islower())


# ----------------------------------------------------------------------------- measuring
_INPUTS: dict[str, InputSet] = {}


def _rss_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _serve(conn, name: str, input_name: str, settings: peers.Settings, jobs: int,
           lm_label: str) -> None:
    """A decoder's forked process: build it and warm it up, say so (a Measure with the load time
    or the error), then time one pass over the set per "pass" request (after an untimed one,
    from the second on), answering (wall s, CPU s, texts of the first pass); on "stop", answer
    its peak memory and end."""
    data = _INPUTS[input_name]
    result = Measure(input_name, lm_label, name, len(data.emissions), data.audio_seconds)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark inherited from the parent
        base = _rss_mib("VmRSS")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decode = None
    try:
        start = time.perf_counter()
        if data.lexicon is not None:
            settings = replace(settings, lexicon=data.lexicon)
        decode = peers.build(name, data.vocabulary, settings, jobs)
        result.load_s = time.perf_counter() - start
        decode([min(data.emissions, key=len)])  # warm-up: imports, first-call allocations
    except Exception as exc:  # noqa: BLE001 - a failing peer is reported in the table, not fatal
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    conn.send(result)
    first = True
    while conn.recv() == "pass" and decode is not None:
        try:
            if not first:   # warm again what the other decoders' turns evicted (untimed)
                decode(data.emissions)
            start, cpu_start = time.perf_counter(), time.process_time()
            texts = decode(data.emissions)
            conn.send((time.perf_counter() - start, time.process_time() - cpu_start,
                       [" ".join(t.split()) for t in texts] if first else None))
            first = False
        except Exception as exc:  # noqa: BLE001
            conn.send(f"{type(exc).__name__}: {exc}"[:200])
    peak = _rss_mib("VmHWM")
    if not np.isfinite(peak):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(peak - base)


def _answer(conn, child) -> object:
    """The child's next message, or None when it died (crashed in native code) first."""
    while not conn.poll(1.0):
        if not child.is_alive() and not conn.poll(0.1):
            return None
    return conn.recv()


def measure_interleaved(runs: list[tuple[str, str, peers.Settings, int, str]], repeat: int
                        ) -> list[Measure]:
    """Decoders of one input set and LM, each in its own forked, non-daemonic process (its own
    memory; --jobs can fork workers under it), built one after the other and then timed in
    turns: pass r of every decoder before pass r + 1 of any. The host's drift over minutes then
    moves every decoder's passes alike, and the ratios of best and median passes hold."""
    ctx = multiprocessing.get_context("fork")
    measures: list[Measure] = []
    # per decoder: its pipe end, process, Measure, wall and CPU seconds of each pass
    live: list[tuple[Any, Any, Measure, list[float], list[float]]] = []
    for run in runs:
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=_serve, args=(child_end, *run))
        child.start()
        ready = _answer(parent_end, child)
        if not isinstance(ready, Measure):
            name, input_name, _settings, _jobs, lm_label = run
            ready = Measure(input_name, lm_label, name,
                            error=f"decoder process died (exit code {child.exitcode})")
        measures.append(ready)
        live.append((parent_end, child, ready, [], []))
    for _ in range(repeat):
        for conn, child, result, passes, cpu in live:
            if result.error:
                continue
            conn.send("pass")
            answer = _answer(conn, child)
            if answer is None or isinstance(answer, str):
                result.error = answer or f"decoder process died (exit code {child.exitcode})"
                continue
            assert isinstance(answer, tuple)
            wall, cpu_s, texts = answer
            passes.append(wall)
            cpu.append(cpu_s)
            if texts is not None:
                result.texts = texts
    for conn, child, result, passes, cpu in live:
        if child.is_alive():
            conn.send("stop")
            peak = _answer(conn, child)
            if isinstance(peak, float):
                result.peak_mib = peak
        child.join()
        if passes and not result.error:
            seconds = result.audio_seconds
            result.ms_per_audio_s = 1000 * sum(passes) / (len(passes) * seconds)
            result.first_pass_ms_per_audio_s = 1000 * passes[0] / seconds
            result.best_pass_ms_per_audio_s = 1000 * min(passes) / seconds
            result.median_pass_ms_per_audio_s = 1000 * float(np.median(passes)) / seconds
            result.cpu_best_ms_per_audio_s = 1000 * min(cpu) / seconds
            result.cpu_median_ms_per_audio_s = 1000 * float(np.median(cpu)) / seconds
    return measures


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER as eval/run.py computes it (default normaliser, eval.metrics)."""
    return corpus_score(score_utterance(r, h, DEFAULT_NORMALIZER)
                        for r, h in zip(references, hypotheses, strict=True)).wer


def ctc_ln_p(vocab: Vocabulary, emissions: list[np.ndarray], texts: list[str]) -> np.ndarray:
    """(N,) ln P(text | emission) summed over all CTC alignments (torch's CTC forward pass)."""
    import torch

    out = []
    for x, text in zip(emissions, texts, strict=True):
        target = torch.tensor([vocab.encode_text(text)], dtype=torch.long)
        loss = torch.nn.functional.ctc_loss(
            torch.from_numpy(x)[:, None, :], target, torch.tensor([len(x)]),
            torch.tensor([target.shape[1]]), blank=vocab.blank, reduction="sum")
        out.append(-float(loss))
    return np.array(out)


def score(measures: list[Measure]) -> None:
    """Fill the ratios, agreement and WER columns (per input set and LM)."""
    groups: dict[tuple[str, str], list[Measure]] = {}
    for m in measures:
        groups.setdefault((m.inputs, m.lm), []).append(m)
    for (input_name, lm_label), group in groups.items():
        ref = next((m for m in group if m.decoder == _INPUTS[input_name].reference
                    and not m.error), None)
        refs = _INPUTS[input_name].references
        emissions = _INPUTS[input_name].emissions
        ref_ln_p = None
        if ref is not None and lm_label == "none" and _INPUTS[input_name].lexicon is None:
            ref_ln_p = ctc_ln_p(quartznet_vocab(), emissions, ref.texts)
        for m in group:
            if m.error:
                continue
            if ref is not None:
                # best passes: the machine is shared, and the fastest pass is the one least
                # disturbed by other processes
                m.speed_vs_pyctcdecode = ref.best_pass_ms_per_audio_s / m.best_pass_ms_per_audio_s
                m.median_speed_vs_pyctcdecode = (ref.median_pass_ms_per_audio_s
                                                 / m.median_pass_ms_per_audio_s)
                m.cpu_speed_vs_pyctcdecode = (ref.cpu_best_ms_per_audio_s
                                              / m.cpu_best_ms_per_audio_s)
                m.cpu_median_speed_vs_pyctcdecode = (ref.cpu_median_ms_per_audio_s
                                                     / m.cpu_median_ms_per_audio_s)
                m.agreement = float(np.mean([a == b for a, b in zip(m.texts, ref.texts, strict=True)]))
            if ref_ln_p is not None:  # search quality: how probable the chosen labelling is
                m.delta_ln_p = float(np.mean(ctc_ln_p(quartznet_vocab(), emissions, m.texts)
                                             - ref_ln_p))
            if refs is not None:
                m.wer = corpus_wer(refs, m.texts)


def _cell(value: float, spec: str, scale: float = 1.0) -> str:
    """A figure for the table; "-" where it does not exist (e.g. d ln p of an LM run, WER
    without references), never "nan"."""
    return "-" if not np.isfinite(value) else format(scale * value, spec)


def table_rows(measures: list[Measure]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for m in measures:
        if m.error:
            rows.append((m.inputs, m.lm, m.decoder, "ERROR", m.error))
            continue
        rows.append((m.inputs, m.lm, m.decoder, str(m.utterances), f"{m.audio_seconds:.1f}",
                     f"{m.load_s:.2f}", _cell(m.ms_per_audio_s, ".3f"),
                     _cell(m.first_pass_ms_per_audio_s, ".3f"),
                     _cell(m.best_pass_ms_per_audio_s, ".3f"),
                     _cell(m.median_pass_ms_per_audio_s, ".3f"),
                     _cell(m.best_pass_ms_per_audio_s * m.audio_seconds / 1000, ".2f"),
                     _cell(m.speed_vs_pyctcdecode, ".2f"),
                     _cell(m.median_speed_vs_pyctcdecode, ".2f"), _cell(m.cpu_best_ms_per_audio_s, ".3f"),
                     _cell(m.cpu_median_ms_per_audio_s, ".3f"), _cell(m.cpu_speed_vs_pyctcdecode, ".2f"),
                     _cell(m.cpu_median_speed_vs_pyctcdecode, ".2f"), _cell(m.agreement, ".1f", 100),
                     _cell(m.wer, ".2f", 100), _cell(m.peak_mib, ".1f"), _cell(m.delta_ln_p, ".2f")))
    return rows


def print_table(measures: list[Measure]) -> None:
    header = ("inputs", "LM", "decoder", "utts", "audio s", "load s", "ms/aud-s", "1st pass",
              "best", "median", "best s", "x ref", "x median", "cpu best", "cpu med", "x cpu", "x cpu med",
              "agree %", "WER %", "peak MiB", "d ln p")
    print(Table(header, table_rows(measures), align="<<<" + ">" * 18).text())


def save(measures: list[Measure], args: argparse.Namespace, out_file: Path) -> None:
    out_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: str(v) for k, v in vars(args).items()},
               "results": [{**{k: v for k, v in asdict(m).items() if k != "texts"},
                            # the transcripts' fingerprint: runs on two devices or machines
                            # compare by it (same transcripts, same hash)
                            "texts_sha1": hashlib.sha1("\n".join(m.texts).encode()).hexdigest()}
                           for m in measures]}
    atomic_write_text(out_file, json.dumps(payload, indent=1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/decode_speed.py", description=__doc__,
                                formatter_class=HelpFormatter)
    add_option_flags(p.add_argument_group("matched search settings (pyctcdecode's options, "
                                          "given to every decoder)"),
                     {REFERENCE: PyctcdecodeOptions}, only=peers.MATCHED)
    add_option_flags(p.add_argument_group("what our decoders compute besides texts and times "
                                          "(the peers compute no word confidence)"),
                     {REFERENCE: PyctcdecodeOptions}, only=("word_confidence",))
    p.add_argument("--repeat", type=int, default=3,
                   help="timed passes over each set (mean, first and best are reported)")
    p.add_argument("--inputs", nargs="+", choices=INPUT_KINDS, default=list(DEFAULT_INPUTS),
                   help="input sets: real (the shared QuartzNet emissions), peaky (synthetic, "
                   "one dominant label per frame), random (log_softmax of normal logits), hama "
                   "(the shared IPA phoneme emissions)")
    p.add_argument("--lm", default=str(DEFAULT_LM),
                   help="KenLM .arpa/.arpa.gz/.binary for the LM runs; 'none' for no-LM runs only")
    p.add_argument("--lm-only", action="store_true", help="skip the runs without an LM")
    p.add_argument("--decoder", nargs="+", default=list(DEFAULT_DECODERS),
                   help="ctclab decoders and peers to run (as eval/run.py's --decoder: names "
                   f"separated by spaces; peers: {', '.join(peers.PEERS)})")
    p.add_argument("--jobs", type=int, default=1, help="decoding processes per decoder")
    p.add_argument("--emissions", default=str(EMISSIONS_DIR),
                   help="folder of the real inputs (labels.json, manifest.tsv, <split>/<id>.npy)")
    p.add_argument("--hama", default=str(HAMA_DIR), help="hama phoneme emissions folder")
    p.add_argument("--hama-lexicon", default=str(HAMA_LEXICON),
                   help="IPA pronunciation lexicon of the LM's words (word<TAB>phonemes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    p.add_argument("--peaky-utterances", type=int, default=PEAKY_UTTERANCES,
                   help="utterances in the peaky set")
    p.add_argument("--random-utterances", type=int, default=RANDOM_UTTERANCES,
                   help=f"utterances in the random set ({RANDOM_FRAMES} frames each)")
    p.add_argument("--corpus-utterances", type=int, nargs="+", default=[TEST_CLEAN[0]],
                   help="sizes of the corpus sets (the smaller ones are the largest's first "
                   "utterances); test-other: 2939")
    p.add_argument("--corpus-hours", type=float, default=TEST_CLEAN[1],
                   help="audio of the largest corpus set; test-other: 5.3")
    p.add_argument("--device", default=None,
                   help="where our beam searches run: auto, cpu, cuda, cuda:N (default: the "
                   "decoder's own, auto)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="utterances our beam searches together (default: the device's)")
    p.add_argument("--out", default=str(OUT_FILE), help="JSON results file (written atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.lm_only and args.lm.lower() == "none":
        p.error("--lm-only needs an LM (--lm PATH)")
    try:
        args.matched = PyctcdecodeOptions(**given_options(args, {REFERENCE: PyctcdecodeOptions}))
    except (TypeError, ValueError) as exc:
        p.error(str(exc))
    if min(args.repeat, args.jobs, args.peaky_utterances, args.random_utterances,
           *args.corpus_utterances, args.batch_size or 1) < 1 or not args.corpus_hours > 0:
        p.error("--repeat, --jobs, --batch-size and the utterance counts must be >= 1, "
                "--corpus-hours > 0")
    valid = set(available_decoders()) | set(peers.PEERS)
    for name in args.decoder:
        if name not in valid:  # pyctcdecode without its package: say what to install
            p.error(missing_requirement(name) or
                    f"unknown --decoder {name!r}; valid here: {sorted(valid)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    show_notes(not args.quiet)
    # before the decoders' processes fork: every decoder runs with the same allocator settings
    kept = keep_freed_memory()
    _INPUTS.clear()
    rng = np.random.default_rng(args.seed)
    vocab = quartznet_vocab()
    lm_runs: list[tuple[str, Path | None]] = [] if args.lm_only else [("none", None)]
    if args.lm.lower() != "none":
        if Path(args.lm).exists():
            lm_runs.append((Path(args.lm).name.split(".")[0][:15], resolve_lm_path(args.lm)))
        else:
            print(f"no LM runs: {args.lm} not found (pass --lm PATH or --lm none)", file=sys.stderr)
    for name in dict.fromkeys(args.inputs):
        if name == "real":
            root = Path(args.emissions)
            if not (root / "manifest.tsv").is_file():
                print(f"skipping real inputs: {root}/manifest.tsv not found", file=sys.stderr)
                continue
            _INPUTS["real"] = load_real(root)
        elif name == "hama":
            root, lexicon = Path(args.hama), Path(args.hama_lexicon)
            if not (root / "manifest.tsv").is_file() or not lexicon.is_file():
                print(f"skipping hama inputs: {root}/manifest.tsv or {lexicon} not found",
                      file=sys.stderr)
                continue
            _INPUTS["hama"] = load_hama(root, lexicon)
        elif name == "peaky":
            _INPUTS["peaky"] = make_peaky(vocab, rng, args.peaky_utterances,
                                          peaky_lexicon(lm_runs))
        elif name == "corpus":
            sizes = sorted(set(args.corpus_utterances))
            whole = make_corpus(vocab, rng, sizes[-1], args.corpus_hours, peaky_lexicon(lm_runs))
            for size in sizes:
                _INPUTS[f"corpus-{size}"] = subset(whole, size)
        else:
            _INPUTS["random"] = make_random(vocab, rng, args.random_utterances)
    jobs = [(d, i, lm_label, lm_file) for i in _INPUTS for lm_label, lm_file in lm_runs
            for d in args.decoder if not (d == "greedy" and lm_file is not None)
            and not (d == "beam-kenlm" and lm_file is None)
            and (_INPUTS[i].lexicon is None or d in LEXICON_DECODERS)]
    measures = []
    m = args.matched
    beam_options = {k: v for k, v in (("device", args.device), ("batch_size", args.batch_size))
                    if v is not None}
    # the decoders of one input set and LM are timed in turns (measure_interleaved)
    groups: dict[tuple[str, str], list[tuple[str, str, peers.Settings, int, str]]] = {}
    for decoder, input_name, lm_label, lm_file in jobs:
        settings = peers.Settings(replace(m, lm_path=None if lm_file is None else str(lm_file)),
                                  lm_file, beam_options=beam_options)
        groups.setdefault((input_name, lm_label), []).append(
            (decoder, input_name, settings, args.jobs, lm_label))
    bar = progress_bar(len(jobs), "decoders", "run", enabled=not args.quiet)
    for runs in groups.values():
        measures.extend(measure_interleaved(runs, args.repeat))
        bar.update(len(runs))
    bar.close()
    score(measures)
    ours_at = beam_options or ("at its defaults" if m.word_confidence
                               else "otherwise at its defaults")
    print(f"\nbeam width {m.beam_width}, token_min_logp {m.token_min_logp}, beam_prune_logp "
          f"{m.beam_prune_logp}, prune_history {m.prune_history}, alpha {m.alpha}, beta "
          f"{m.beta}, word confidences of our decoders "
          f"{'on' if m.word_confidence else 'off (--no-word-confidence)'}, "
          f"repeat {args.repeat}, jobs {args.jobs}, our beam {ours_at}, freed memory "
          f"{'kept' if kept else 'returned'} (core/memory.py, every decoder alike); x ref = the "
          "reference peer's best pass / this one's (> 1 = faster; the "
          "reference is pyctcdecode, flashlight on hama), x median the same on median passes, "
          "best s = the best pass in seconds, "
          "x cpu / x cpu med the same in CPU time; agree = identical transcripts to the "
          "reference's; d ln p (no-LM runs) = "
          "mean ln P(text | emission) over all alignments minus pyctcdecode's (> 0 = the search "
          "found a more probable labelling)")
    print_table(measures)
    save(measures, args, Path(args.out))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
