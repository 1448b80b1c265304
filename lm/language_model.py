"""The scoring interfaces decoders fuse with (one word at a time, or arrays of words), and the
KenLM implementation. The array implementation is lm.array_lm.

All scores are natural logs (KenLM reports log10; we convert once, here).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.arrays import Arrays
from ctclab.lm.arpa import ArpaFormatError, is_gzip, looks_like_arpa, validate_arpa
from ctclab.lm.files import resolve_lm_path

LOG10_TO_LN = math.log(10.0)
LOG = logging.getLogger("ctclab.lm")


class LanguageModel(ABC):
    """A word language model as the beam search sees it.

    States are opaque, hashable values; ``score`` never mutates its input state.
    Words are given in the LM's own casing (map acoustic words first, see lm.casing).
    """

    order: int = 0

    @abstractmethod
    def start_state(self) -> Hashable:
        """State after the sentence-start token ``<s>``."""

    @abstractmethod
    def score(self, state: Hashable, word: str) -> tuple[float, Hashable]:
        """(ln P(word | state), state after word). OOV words get the model's ``<unk>`` score."""

    @abstractmethod
    def end_score(self, state: Hashable) -> float:
        """ln P(</s> | state)."""

    @abstractmethod
    def is_oov(self, word: str) -> bool:
        """True when ``word`` is not in the LM vocabulary."""


class BatchLanguageModel(ABC):
    """A word language model scored for many (history, word) pairs per call, as array searches
    need it: histories are int64 *context ids* handed out by the model (``start_context`` and the
    contexts ``score_batch`` returns), words are int64 ids from ``word_ids``. Natural logs.
    """

    order: int = 0

    @property
    @abstractmethod
    def start_context(self) -> int:
        """Context id of the history ``<s>``."""

    @abstractmethod
    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        """(n,) int64 ids of ``words`` (in the LM's casing); unknown words get ids too."""

    @abstractmethod
    def known(self, word_ids: np.ndarray) -> np.ndarray:
        """(n,) bool: the LM's vocabulary has the word (it is not scored as ``<unk>``)."""

    @abstractmethod
    def score_batch(self, contexts: np.ndarray, word_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """((n,) float64 ln P(word | history), (n,) int64 context ids after the word)."""

    @abstractmethod
    def end_score_batch(self, contexts: np.ndarray) -> np.ndarray:
        """(n,) float64 ln P(</s> | history)."""

    def trim(self) -> bool:
        """Between searches: drop what was remembered for them once it outgrows its limits.
        True when context and word ids handed out before are no longer valid."""
        return False

    def on(self, xp: Arrays) -> BatchLanguageModel:
        """This LM scoring (contexts, word ids) arrays of the namespace ``xp`` (ctclab.core.arrays);
        word_ids / known stay numpy. numpy: itself; else answered on the host (HostScored)
        unless the LM has a form of its own there (the array LM's tables on the device)."""
        return self if xp.name == "numpy" else HostScored(self, xp)


class HostScored(BatchLanguageModel):
    """A batch LM scored on the host for a search in another namespace: each call copies its
    inputs to the host and its answers back (one copy each way)."""

    def __init__(self, host: BatchLanguageModel, xp: Arrays):
        self.host, self.xp = host, xp
        self.order = host.order

    @property
    def start_context(self) -> int:
        return self.host.start_context

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        return self.host.word_ids(words)

    def known(self, word_ids: np.ndarray) -> np.ndarray:
        return self.host.known(word_ids)

    def score_batch(self, contexts: Any, word_ids: Any) -> tuple[Any, Any]:
        xp = self.xp
        ln, after = self.host.score_batch(xp.to_numpy(contexts), xp.to_numpy(word_ids))
        return xp.asarray(ln, xp.float64), xp.asarray(after, xp.int64)

    def end_score_batch(self, contexts: Any) -> Any:
        xp = self.xp
        return xp.asarray(self.host.end_score_batch(xp.to_numpy(contexts)), xp.float64)

    def trim(self) -> bool:
        return self.host.trim()


class KenLMLanguageModel(LanguageModel):
    """KenLM model (ARPA or binary) behind :class:`LanguageModel`.

    path: .arpa, .arpa.gz is not read by KenLM (decompress first), .binary/.klm. given: what the
    user named, for the loading note (an .arpa.gz, a known name) when ``path`` is a copy made
    from it (lm.files.resolve_lm_path); None: ``path`` itself. Scores are not cached here: the
    beam search reaches KenLM through lm.scalar_batch, whose cache per (history, word) is the
    one score cache. KenLM states are hashable.
    """

    def __init__(self, path: str | Path, given: str | Path | None = None):
        try:
            import kenlm
        except ImportError as exc:  # pragma: no cover - kenlm is a hard dependency
            raise ImportError("KenLM's Python module is missing: pip install kenlm") from exc
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"language model file not found: {path}")
        if is_gzip(path):  # by content: a gzip named .arpa would fail in KenLM as "corrupt"
            raise ValueError(f"{path}: KenLM cannot read gzip; decompress it first (gunzip -k "
                             f"{path}), or load it with load_language_model, which does")
        start = time.perf_counter()
        try:
            with _native_output_captured() as printed:
                self._model = kenlm.Model(str(path))
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:
            # Random bytes make KenLM's own error message undecodable: UnicodeDecodeError.
            _raise_precise_arpa_error(path)
            name = path if given is None or Path(given) == path else \
                f"{given} (decompressed to {path})"
            raise ValueError(f"{name}: KenLM could not load it ({exc}); the file may be corrupt or "
                             "truncated; rebuild it with lm/build.py or download it again") from exc
        self._kenlm = kenlm
        self.path = path
        self.order = int(self._model.order)
        shown = Path(given).name if given is not None else path.name
        LOG.info(_load_note(shown, self.order, time.perf_counter() - start, printed))

    @property
    def kenlm_model(self) -> Any:
        """The underlying ``kenlm.Model`` (shared with pyctcdecode so it is loaded once)."""
        return self._model

    def start_state(self) -> Any:
        state = self._kenlm.State()
        self._model.BeginSentenceWrite(state)
        return state

    def score(self, state: Any, word: str) -> tuple[float, Any]:
        out = self._kenlm.State()
        return self._model.BaseScore(state, word, out) * LOG10_TO_LN, out

    def end_score(self, state: Any) -> float:
        out = self._kenlm.State()
        return self._model.BaseScore(state, "</s>", out) * LOG10_TO_LN

    def is_oov(self, word: str) -> bool:
        return word not in self._model

    def __contains__(self, word: str) -> bool:
        return word in self._model


def _load_note(name: str, order: int, seconds: float, printed: list[str]) -> str:
    """One line in place of KenLM's loading banner (progress bar, binary hint, <unk> notice);
    name: the file as the user named it."""
    text = "".join(printed)
    note = f"LM {name}: {order}-gram loaded in {seconds:.1f} s"
    if "faster if you build a binary" in text:
        note += " (a KenLM binary loads in milliseconds: lm/build.py --binary)"
    if "missing <unk>" in text:
        note += "; it has no <unk>, so KenLM scores unknown words log10 -100"
    return note


@contextlib.contextmanager
def _native_output_captured() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptors 1 and 2 (KenLM prints its loading
    banner from C++, past sys.stdout/sys.stderr); the text is in the yielded list afterwards.
    Where the descriptors cannot be redirected the output is left alone."""
    printed: list[str] = []
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:
        yield printed
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield printed
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            printed.append(sink.read().decode("utf-8", "replace"))


def _raise_precise_arpa_error(path: Path) -> None:
    """After KenLM failed on an ARPA file, re-read it ourselves to name the bad line (or return)."""
    if not looks_like_arpa(path):
        return
    try:
        validate_arpa(path)
    except ArpaFormatError as exc:
        raise exc from None


def load_language_model(path: str | Path, cache_root: str | Path | None = None) -> LanguageModel:
    """Load a KenLM ARPA/binary file as a :class:`LanguageModel`.

    ``path`` may also be an .arpa.gz (decompressed once into the cache) or a known name such as
    ``librispeech-4gram``: see :func:`lm.files.resolve_lm_path`.
    """
    return KenLMLanguageModel(resolve_lm_path(path, cache_root), given=path)
