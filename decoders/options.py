"""Every decoder option, declared once: frozen dataclasses whose fields carry their help text.

The command lines (eval/run.py, bench/decode_speed.py) generate their flags, help and shown defaults
from these fields (ctclab.core.options), and the options object a decoder is built with is the one
its search reads. Options that ``beam`` and ``pyctcdecode`` share are declared once, in the base
classes, so they mean the same thing in both:

    WordOutputOptions         word_confidence                               (every decoder)
    ├─ GreedyOptions          (none of its own)
    └─ LMOptions              lm_path, unigrams_path, alpha, beta          (decoders that fuse an LM)
       └─ PrefixSearchOptions beam_width, token_min_logp, beam_prune_logp, hotwords,
          │                   hotword_weight, nbest                         (CTC prefix beam searches)
          ├─ BeamOptions      token_top_k, blank_skip_threshold, lexicon_mode,
          │                   unknown_prefix_penalty, batch_size, device, array_backend,
          │                   lm_backend, lm_arrays_max_mib, lexicon_path,
          │                   skip_unknown_tokens, tokenizer_path           (``beam``)
          └─ PyctcdecodeOptions prune_history, unk_score_offset, lm_score_boundary
                                                                            (``pyctcdecode``)

Defaults, and why they are what they are: decoders/constants.py. Scores are natural logs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ctclab.core.arrays import ARRAY_BACKENDS, DEVICES
from ctclab.core.options import NO_FLAG, option
from ctclab.decoders import constants as C
from ctclab.lm.constants import LM_BACKENDS


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _finite(name: str, value: float) -> None:
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _ln_threshold(name: str, value: float) -> None:
    value = float(value)
    if math.isnan(value) or value > 0:
        raise ValueError(f"{name} is a ln probability / penalty and must be <= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class WordOutputOptions:
    """What every decoder computes for its words beyond their text and times. Keyword-only, so
    that the subclasses' fields keep their positions."""

    word_confidence: bool = option(
        C.DEFAULT_WORD_CONFIDENCE, "compute each word's confidence and frame confidence "
        "(--no-word-confidence: NaN, for speed when only texts and times are wanted)")

    def __post_init__(self) -> None:
        if not isinstance(self.word_confidence, (bool, np.bool_)):
            raise TypeError(f"word_confidence must be True or False, got "
                            f"{self.word_confidence!r}")


@dataclass(frozen=True)
class GreedyOptions(WordOutputOptions):
    """Greedy decoding: only what every decoder has (WordOutputOptions)."""

    def inert(self) -> dict[str, str]:
        """Options that have no effect with these values, each with the reason (none here)."""
        return {}

    def input_files(self) -> dict[str, str]:
        """The files these options read, by field (none here)."""
        return {}


@dataclass(frozen=True)
class LMOptions(WordOutputOptions):
    """Word n-gram shallow fusion: total = acoustic + alpha * ln P_LM(words) + beta * words."""

    # Given on the command line as --lm (one system per LM), so it has no flag of its own here.
    lm_path: str | None = option(None, "KenLM .arpa / .arpa.gz / .binary or a known LM name",
                                 flag=NO_FLAG)
    unigrams_path: str | None = option(
        None, "known words: a word list, lexicon or ARPA (none: the LM's own ARPA unigrams)",
        flag="unigrams")
    alpha: float = option(C.DEFAULT_ALPHA, "LM weight")
    beta: float = option(C.DEFAULT_BETA, "word insertion bonus")

    def __post_init__(self) -> None:
        super().__post_init__()
        # A Path is accepted and recorded as text (settings.json, labels).
        if self.lm_path is not None:
            object.__setattr__(self, "lm_path", str(self.lm_path))
        if self.unigrams_path is not None:
            object.__setattr__(self, "unigrams_path", str(self.unigrams_path))
        _finite("alpha", self.alpha)
        _finite("beta", self.beta)
        if self.alpha < 0:
            raise ValueError(f"alpha (LM weight) must be >= 0, got {self.alpha}")

    def input_files(self) -> dict[str, str]:
        """The files these options read, by field (an LM may also be a known name): results and
        tuned values made with them record what the files were (eval/results.py)."""
        return {k: v for k, v in (("lm_path", self.lm_path),
                                  ("unigrams_path", self.unigrams_path)) if v is not None}

    def inert(self) -> dict[str, str]:
        """Options that have no effect with these values, each with the reason: a command line
        warns about (or refuses) a value given for one of them."""
        return {} if self.lm_path is not None else {"alpha": "no language model",
                                                    "beta": "no language model"}


@dataclass(frozen=True)
class PrefixSearchOptions(LMOptions):
    """What every CTC prefix beam search here takes (``beam`` and ``pyctcdecode``)."""

    beam_width: int = option(C.DEFAULT_BEAM_WIDTH, "beams kept per utterance after every frame")
    token_min_logp: float = option(
        C.DEFAULT_TOKEN_MIN_LOGP, "labels below this ln prob in a frame are not tried there (the "
        "frame's best label always is)")
    beam_prune_logp: float = option(
        C.DEFAULT_BEAM_PRUNE_LOGP, "drop beams this far (ln) below the utterance's best")
    hotwords: tuple[str, ...] = option((), "words to boost, in any casing")
    hotword_weight: float = option(C.DEFAULT_HOTWORD_WEIGHT, "ln bonus of a finished hotword")
    nbest: int = option(C.DEFAULT_NBEST, "alternatives kept per utterance (Hypothesis.nbest; "
                        "eval/run.py writes them, with their word errors, to the results JSONL)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.hotwords, str):
            raise TypeError("hotwords must be a sequence of words, e.g. ('ravi',), not one string")
        object.__setattr__(self, "hotwords", tuple(str(w) for w in self.hotwords))
        if any(not w.strip() for w in self.hotwords):
            raise ValueError(f"hotwords must be non-empty words, got {self.hotwords!r}")
        _positive_int("beam_width", self.beam_width)
        _positive_int("nbest", self.nbest)
        if self.nbest > self.beam_width:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam_width ({self.beam_width})")
        _ln_threshold("token_min_logp", self.token_min_logp)
        _ln_threshold("beam_prune_logp", self.beam_prune_logp)
        _finite("hotword_weight", self.hotword_weight)

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if not self.hotwords:
            out["hotword_weight"] = "no hotwords"
        return out


@dataclass(frozen=True)
class BeamOptions(PrefixSearchOptions):
    """Options of the ``beam`` decoder (decoders/beam.py)."""

    token_top_k: int | None = option(
        C.DEFAULT_TOKEN_TOP_K, "at most this many labels per frame tried as extensions (none: "
        "no limit)")
    blank_skip_threshold: float | None = option(
        C.DEFAULT_BLANK_SKIP_THRESHOLD, "skip frames whose blank probability is at least this "
        "(none: only frames with no usable label)")
    lexicon_mode: str | None = option(
        None, "unknown partial words: penalised (soft), forbidden (hard) or ignored (none); "
        "unset: soft, or hard when words come from a pronunciation lexicon",
        choices=C.LEXICON_MODES)
    unknown_prefix_penalty: float = option(
        C.DEFAULT_UNKNOWN_PREFIX_PENALTY, "ln penalty of a partial word that no known word starts "
        "with, and of an unknown finished word (soft lexicon)")
    batch_size: int | None = option(
        None, "utterances searched together (none: the device's default, "
        f"{C.DEFAULT_BATCH_SIZE_CPU} on the CPU, fewer where their emissions would pass "
        f"{C.DEFAULT_BATCH_CELLS_CPU * 4 // 2**30} GiB, {C.DEFAULT_BATCH_SIZE_GPU} on a GPU)",
        neutral=True)
    device: str = option(
        C.DEFAULT_DEVICE, "where the search runs: auto (CUDA when a GPU is present, else the "
        "CPU), cpu, cuda or cuda:N (mps: the CPU; Apple GPUs have no float64); the same results "
        "everywhere", neutral=True)
    array_backend: str = option(
        "auto", "array library of the search: auto (numpy on the CPU, torch on a GPU), numpy, "
        "or torch (on the CPU: the GPU's code path)", choices=ARRAY_BACKENDS, neutral=True)
    lm_backend: str = option(
        C.DEFAULT_LM_BACKEND, "how the LM is scored, with the same results: the array LM "
        "(arrays; auto = arrays for ARPA files, KenLM for binaries and oversized LMs) or KenLM",
        choices=LM_BACKENDS, neutral=True)
    lm_arrays_max_mib: float = option(
        C.DEFAULT_LM_ARRAYS_MAX_MIB, "largest array LM to build and hold (MiB); larger ones are "
        "scored with KenLM (auto) or refused (arrays)", neutral=True)
    lexicon_path: str | None = option(
        None, "pronunciation lexicon, word<TAB>tok tok tok, several lines per word for several "
        "pronunciations: how words reach the model's tokens (phonemes need one) and the known "
        "words", flag="lexicon")
    skip_unknown_tokens: bool = option(
        False, "skip (and count) lexicon lines whose tokens the model lacks, instead of an error")
    tokenizer_path: str | None = option(
        None, "the word-piece model's tokenizer (SentencePiece .model or tokenizer.json) that "
        "spells words in its pieces (none: eval/run.py takes the tokenizer of the model that made "
        "the emissions when its files are here, else the longest pieces)", flag="tokenizer")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lexicon_path", "tokenizer_path"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        kind = str(self.device).split(":")[0]
        if kind not in DEVICES or (kind != "cuda" and ":" in self.device):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N, "
                             "mps")
        if self.array_backend not in ARRAY_BACKENDS:
            raise ValueError(f"unknown array_backend {self.array_backend!r}; valid: "
                             f"{', '.join(ARRAY_BACKENDS)}")
        if kind == "cuda" and self.array_backend == "numpy":
            raise ValueError("array_backend numpy runs on the CPU only: use device cpu, or "
                             "array_backend torch (or auto) on cuda")
        if self.lm_backend not in LM_BACKENDS:
            raise ValueError(f"unknown lm_backend {self.lm_backend!r}; valid: "
                             f"{', '.join(LM_BACKENDS)}")
        if not float(self.lm_arrays_max_mib) > 0:
            raise ValueError(f"lm_arrays_max_mib must be a positive number of MiB, got "
                             f"{self.lm_arrays_max_mib!r}")
        if self.token_top_k is not None:
            try:
                _positive_int("token_top_k", self.token_top_k)
            except ValueError:
                raise ValueError(f"token_top_k must be a positive integer or None, got "
                                 f"{self.token_top_k!r}") from None
        _ln_threshold("unknown_prefix_penalty", self.unknown_prefix_penalty)
        if self.blank_skip_threshold is not None and not 0.5 < self.blank_skip_threshold <= 1:
            raise ValueError("blank_skip_threshold is a blank probability in (0.5, 1] (or None to "
                             f"never skip), got {self.blank_skip_threshold}")
        if self.lexicon_mode is not None and self.lexicon_mode not in C.LEXICON_MODES:
            raise ValueError(f"unknown lexicon_mode {self.lexicon_mode!r}; valid: "
                             f"{', '.join(C.LEXICON_MODES)}")

    def input_files(self) -> dict[str, str]:
        out = super().input_files()
        out.update({k: v for k, v in (("lexicon_path", self.lexicon_path),
                                      ("tokenizer_path", self.tokenizer_path)) if v is not None})
        return out

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if self.lm_path is None:
            out["lm_backend"] = out["lm_arrays_max_mib"] = "no language model"
        elif self.lm_backend == "kenlm":
            out["lm_arrays_max_mib"] = "lm_backend 'kenlm' builds no arrays"
        if self.lexicon_path is None:
            out["skip_unknown_tokens"] = "no pronunciation lexicon"
        mode = self.lexicon_mode or ("hard" if self.lexicon_path is not None else "soft")
        if self.lm_path is None and self.unigrams_path is None and self.lexicon_path is None:
            out["lexicon_mode"] = out["unknown_prefix_penalty"] = \
                "no language model, word list or lexicon"  # no known words to check
        elif mode != "soft":
            out["unknown_prefix_penalty"] = f"lexicon mode {mode!r} (only 'soft' uses it)"
        return out


@dataclass(frozen=True)
class PyctcdecodeOptions(PrefixSearchOptions):
    """Options of the ``pyctcdecode`` adapter (decoders/pyctc.py). Its defaults are pyctcdecode's
    own, which the shared ones above match, so both decoders at defaults are matched settings."""

    # Off by default so that results keep the ``beam`` decoder's exact prefix-search semantics.
    prune_history: bool = option(
        False, "pyctcdecode's dedup of beams that share the LM-visible history (faster, fewer "
        "distinct n-best)")
    unk_score_offset: float = option(
        C.DEFAULT_UNKNOWN_PREFIX_PENALTY, "pyctcdecode's penalty of unknown and partial words "
        "(log10 inside its LM term for finished words)")
    lm_score_boundary: bool = option(True, "score <s> and </s> with the LM")

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("unk_score_offset", self.unk_score_offset)
        if self.unigrams_path is not None and self.lm_path is None:
            raise ValueError("unigrams_path only applies with a language model; set lm_path too")

    def inert(self) -> dict[str, str]:
        out = super().inert()
        if self.lm_path is None:
            out["unk_score_offset"] = out["lm_score_boundary"] = "no language model"
        return out
