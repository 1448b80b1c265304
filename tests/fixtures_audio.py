"""Test fixtures that build things on disk: a tiny random-init CTC model and a tiny OpenSLR corpus.

Import from tests as ``from fixtures_audio import make_tiny_model, make_openslr_corpus``.
Everything is generated (no downloads), small enough to run in well under a second on a CPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The 32 labels of facebook/wav2vec2-base-960h, in index order (blank = <pad> = 0, "|" = delimiter).
WAV2VEC2_LABELS = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ")
# A full 7-layer conv stack (total stride 320 = 20 ms at 16 kHz, receptive field 400 samples) like
# wav2vec2-base, so frame counts and the length formula are the real ones; tiny channel counts.
TINY_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
TINY_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
SAMPLE_RATE = 16_000
_WORDS = ("HELLO", "WORLD", "CAT", "SAT", "ON", "THE", "MAT", "IT'S", "QUIZ", "JAZZ", "BOX", "DOG")


def make_tiny_model(path: str | Path, *, feat_extract_norm: str = "group", seed: int = 0) -> Path:
    """Save a tiny random-init ``Wav2Vec2ForCTC`` + ``Wav2Vec2Processor`` to ``path``; return it.

    feat_extract_norm: "group" = wav2vec2-base style (group norm in the first conv layer, the
        feature extractor has ``return_attention_mask=False``, so padding changes outputs);
        "layer" = wav2vec2-large-lv60 style (layer norm, stable layer norm transformer,
        ``return_attention_mask=True``).
    The vocabulary is wav2vec2's 32 English labels. ``path`` is then loadable by
    ``AutoModelForCTC.from_pretrained(path)`` / ``eval.models.load_ctc_model(str(path))``.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    if feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {feat_extract_norm!r}")
    layer = feat_extract_norm == "layer"
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = Wav2Vec2Config(
        vocab_size=len(WAV2VEC2_LABELS), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
        conv_kernel=TINY_CONV_KERNEL, conv_stride=TINY_CONV_STRIDE,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm=feat_extract_norm, do_stable_layer_norm=layer,
        pad_token_id=0, ctc_loss_reduction="mean",
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0,
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config).eval()
    # Random init gives nearly uniform outputs; scale the head so log-probs are peaky like a
    # trained model's (argmax differences then show up in tests).
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(path)
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({lab: i for i, lab in enumerate(WAV2VEC2_LABELS)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|", bos_token="<s>", eos_token="</s>")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE,
                                         padding_value=0.0, do_normalize=True,
                                         return_attention_mask=layer)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


@dataclass(frozen=True)
class TinyCorpus:
    """What :func:`make_openslr_corpus` wrote.

    root: the corpus root (pass as ``--data-dir``); split: the split folder name.
    texts: utterance id -> reference text for the good utterances (all of them readable).
    seconds: utterance id -> duration in seconds (at 16 kHz after resampling) of good utterances.
    stereo_8k: id of the 8 kHz stereo utterance (also in ``texts``), or None.
    bad: ids whose files are broken (corrupt bytes, empty file), listed in trans.txt.
    """

    root: Path
    split: str
    texts: dict[str, str]
    seconds: dict[str, float]
    stereo_8k: str | None = None
    bad: tuple[str, ...] = field(default_factory=tuple)

    @property
    def good_ids(self) -> list[str]:
        """Sorted ids of the readable utterances."""
        return sorted(self.texts)


def _tone(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like test signal: a few sine partials plus noise, float32 in [-0.5, 0.5]."""
    t = np.arange(round(seconds * rate)) / rate
    freqs = rng.uniform(120, 900, size=3)
    sig = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) for f in freqs) / 6
    sig = sig + 0.05 * rng.standard_normal(t.shape)
    return np.clip(sig, -0.5, 0.5).astype(np.float32)


def make_openslr_corpus(
    root: str | Path,
    split: str = "test-clean",
    *,
    num_utterances: int = 4,
    seconds: tuple[float, float] = (0.6, 2.0),
    stereo_8k: bool = True,
    bad_files: bool = True,
    seed: int = 0,
) -> TinyCorpus:
    """Write a tiny LibriSpeech-layout corpus ``<root>/<split>/<spk>/<chap>/*.flac`` + trans.txt.

    num_utterances: good 16 kHz mono FLAC files with durations uniform in ``seconds``, spread over
        two speakers. stereo_8k: add one more good file recorded at 8 kHz stereo (needs resampling
        and downmixing). bad_files: add one corrupt ``.flac`` (random bytes) and one empty one,
        both listed in trans.txt, so readers must report or skip them.
    Returns a :class:`TinyCorpus` describing what was written.
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root = Path(root)
    texts: dict[str, str] = {}
    secs: dict[str, float] = {}
    lines: dict[Path, list[str]] = {}

    def add(speaker: int, chapter: int, index: int) -> tuple[str, Path, str]:
        utt = f"{speaker}-{chapter}-{index:04d}"
        folder = root / split / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 5))))
        lines.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(f"{utt} {text}")
        return utt, folder / f"{utt}.flac", text

    for i in range(num_utterances):
        speaker, chapter = (11, 100) if i % 2 == 0 else (22, 200)
        utt, file, text = add(speaker, chapter, i)
        dur = float(rng.uniform(*seconds))
        audio = _tone(dur, SAMPLE_RATE, rng)
        sf.write(file, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        texts[utt] = text
        secs[utt] = len(audio) / SAMPLE_RATE
    stereo_id = None
    if stereo_8k:
        stereo_id, file, text = add(33, 300, 0)
        left = _tone(1.0, 8000, rng)
        audio = np.stack([left, 0.5 * left], axis=1)
        sf.write(file, audio, 8000, format="FLAC", subtype="PCM_16")
        texts[stereo_id] = text
        secs[stereo_id] = 1.0
    bad: list[str] = []
    if bad_files:
        corrupt, file, _ = add(44, 400, 0)
        file.write_bytes(b"fLaC" + rng.bytes(600))
        empty, file, _ = add(44, 400, 1)
        file.write_bytes(b"")
        bad = [corrupt, empty]
    for trans, rows in lines.items():
        trans.write_text("\n".join(rows) + "\n")
    return TinyCorpus(root=root, split=split, texts=texts, seconds=secs, stereo_8k=stereo_id,
                      bad=tuple(bad))
