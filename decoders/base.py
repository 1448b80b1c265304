"""The decoder protocol, the registry by name, and input validation shared by all decoders."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.options import field_names
from ctclab.core.validation import validate_log_probs
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.options import LMOptions
from ctclab.lm.loaded import LoadedLM, load_lm

OptionsT = TypeVar("OptionsT")


class Decoder(ABC, Generic[OptionsT]):
    """A CTC decoder: (T, V) float32 log-probs -> Hypothesis.

    Subclasses set ``Options`` (a frozen dataclass whose ``__post_init__`` validates its values) and
    implement :meth:`decode`. ``frame_shift_s`` converts frame indices to seconds in timestamps.
    ``progress``: show the progress of slow set-up work (decompressing an .arpa.gz, building an
    array LM); False prints none (eval/run.py --quiet). Not an option: results do not depend on it.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = type(None)
    options: OptionsT

    def __init__(self, vocab: Vocabulary, options: OptionsT | None = None, *,
                 frame_shift_s: float = 0.02, progress: bool = True):
        if options is None:
            options = self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, "
                            f"got {type(options).__name__}")
        if not frame_shift_s > 0 or not math.isfinite(frame_shift_s):  # NaN fails every compare
            raise ValueError(f"frame_shift_s must be positive seconds, got {frame_shift_s}")
        missing = missing_requirement(self.name)  # an optional package (see register)
        if missing is not None:
            raise ImportError(missing)
        self.vocab = vocab
        self.options = options  # type: ignore[assignment]  # checked against self.Options above
        self.frame_shift_s = float(frame_shift_s)
        self.progress = progress

    @property
    def batch_size(self) -> int:
        """Utterances this decoder searches together in one pass (1: one at a time). Chunks of
        work handed to it (decode_many's workers, eval's runner) hold at least this many."""
        return 1

    @abstractmethod
    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        """Decode one utterance. log_probs: (T, V) float32 natural-log probabilities."""

    def decode_many(
        self,
        emissions: Sequence[np.ndarray],
        jobs: int = 1,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Hypothesis]:
        """Decode many utterances, in order; ``jobs`` > 1 uses a fork-based process pool.

        emissions: sequence of (T_i, V) log-prob arrays. on_done(n) is called after each chunk of n
        utterances finishes (for progress bars). The decoder (and its LM) is inherited by the
        workers through fork, never pickled into each task.
        """
        if jobs <= 1 or len(emissions) < 2:
            return self._decode_chunk(emissions, on_done)
        return _parallel_decode(self, emissions, jobs, on_done)

    def _decode_chunk(self, emissions: Sequence[np.ndarray],
                      on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        """Decode a chunk in this process; subclasses may override with a batched implementation."""
        out = []
        for log_probs in emissions:
            out.append(self.decode(log_probs))
            if on_done:
                on_done(1)
        return out

    def _check(self, log_probs: np.ndarray) -> np.ndarray:
        return validate_log_probs(log_probs, self.vocab.size)


# ----------------------------------------------------------------------------- parallel decoding
# Utterances per task for decoders without a batch_size option (one task = one result message).
MAX_CHUNK_UTTERANCES = 64
_WORKER_CHUNK_FN: Callable[[Sequence[Any]], list] | None = None
_WORKER_ITEMS: Sequence[Any] = ()


def _worker_chunk(bounds: tuple[int, int]) -> list:
    assert _WORKER_CHUNK_FN is not None
    return _WORKER_CHUNK_FN(_WORKER_ITEMS[bounds[0]:bounds[1]])


def fork_map_chunks(chunk_fn: Callable[[Sequence[Any]], list], items: Sequence[Any], jobs: int,
                    chunk_size: int, on_done: Callable[[int], None] | None = None) -> list:
    """``chunk_fn`` over contiguous chunks of ``items`` in ``jobs`` forked workers, results in order.

    Fork (not spawn) so that what ``chunk_fn`` holds (a loaded KenLM model, a decoder) and the
    items (e.g. memory-mapped emissions) are shared copy-on-write instead of being pickled per
    task; pyctcdecode's own pool guidance is the same. Runs in this process when fork is missing.
    on_done(n) is called as each chunk of n items finishes.
    """
    global _WORKER_CHUNK_FN, _WORKER_ITEMS
    if "fork" not in multiprocessing.get_all_start_methods() or jobs <= 1:
        out = chunk_fn(items)
        if on_done:
            on_done(len(items))
        return out
    chunk_size = max(1, chunk_size)
    bounds = [(i, min(i + chunk_size, len(items))) for i in range(0, len(items), chunk_size)]
    _WORKER_CHUNK_FN, _WORKER_ITEMS = chunk_fn, items
    try:
        results: list = []
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for (start, stop), part in zip(bounds, pool.imap(_worker_chunk, bounds), strict=True):
                results.extend(part)
                if on_done:
                    on_done(stop - start)
        return results
    finally:
        _WORKER_CHUNK_FN, _WORKER_ITEMS = None, ()


def _parallel_decode(decoder: Decoder, emissions: Sequence[np.ndarray], jobs: int,
                     on_done: Callable[[int], None] | None) -> list[Hypothesis]:
    """Contiguous chunks decoded by forked workers that inherit the decoder and the emissions."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return decoder._decode_chunk(emissions, on_done)
    jobs = min(jobs, len(emissions), os.cpu_count() or 1) or 1
    # ~4 chunks per worker balance the load; a batching decoder (beam) keeps up to batch_size
    # utterances per chunk, since its per-step overhead is paid once per batch.
    cap = decoder.batch_size if decoder.batch_size > 1 else MAX_CHUNK_UTTERANCES
    chunk = max(1, min(cap, len(emissions) // (jobs * 4)))
    return fork_map_chunks(decoder._decode_chunk, emissions, jobs, chunk, on_done)


# ----------------------------------------------------------------------------- registry
_DECODERS: dict[str, type[Decoder]] = {}
# Registered name -> (optional package its decoder needs, how to install it); see register().
_REQUIREMENTS: dict[str, tuple[str, str]] = {}


def register(name: str, *, requires: str | None = None, install: str = ""
             ) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: make a Decoder available as ``name`` (CLI ``--decoder name``).

    ``requires``: an optional package the decoder needs, imported when the decoder is built, never
    when its module is. While that package does not import, the name stays registered (its
    options and flags exist, and a user asking for it learns what to install) but is left out of
    available_decoders(), and building the decoder or require_decoder(name) raises an ImportError
    that says ``install``.
    """

    def wrap(cls: type[Decoder]) -> type[Decoder]:
        if name in _DECODERS and _DECODERS[name] is not cls:
            raise ValueError(f"decoder name {name!r} is already registered by {_DECODERS[name]}")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"{cls.__name__}.Options must be a (frozen) dataclass")
        cls.name = name
        _DECODERS[name] = cls
        if requires is not None:
            _REQUIREMENTS[name] = (requires, install or f"pip install {requires}")
        return cls

    return wrap


@functools.cache
def _import_error(module: str) -> str | None:
    """None when ``module`` imports, else why not (tried once per process)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return "is not installed"
        return f"does not import here ({exc})"
    except Exception as exc:  # not only ImportError: a package built against another numpy
        return f"does not import here ({type(exc).__name__}: {exc})"
    return None


def missing_requirement(name: str) -> str | None:
    """Why the registered decoder ``name`` cannot be used here (its optional package does not
    import) and what to install, or None when it can be used."""
    if name not in _REQUIREMENTS:
        return None
    module, install = _REQUIREMENTS[name]
    error = _import_error(module)
    if error is None:
        return None
    return f"decoder {name!r} needs {module}, which {error}; install it with: {install}"


def registered_decoders() -> list[str]:
    """Every registered decoder name, sorted, usable here or not (see available_decoders)."""
    return sorted(_DECODERS)


def available_decoders() -> list[str]:
    """Registered decoder names that can be used here (their optional packages import), sorted."""
    return [name for name in sorted(_DECODERS) if missing_requirement(name) is None]


def decoder_class(name: str) -> type[Decoder]:
    """The class registered as ``name``, usable here or not (its Options are always there); an
    unknown name raises ValueError listing the valid names."""
    if name not in _DECODERS:
        unusable = [n for n in registered_decoders() if n not in available_decoders()]
        raise ValueError(f"unknown decoder {name!r}; valid names: {', '.join(available_decoders())}"
                         + (f" (not installed here: {', '.join(unusable)})" if unusable else ""))
    return _DECODERS[name]


def require_decoder(name: str) -> type[Decoder]:
    """decoder_class(name), or ImportError saying what to install when its optional package is
    missing: for command lines, to refuse before any work."""
    cls = decoder_class(name)
    missing = missing_requirement(name)
    if missing is not None:
        raise ImportError(missing)
    return cls


def fused_lm(options: LMOptions, lm: LoadedLM | None, backend: str = "kenlm",
             arrays_max_mib: float | None = None, progress: bool = True) -> LoadedLM | None:
    """The LM a decoder fuses: ``lm`` when given (then the options must not name another),
    else the one ``options.lm_path`` names, loaded once per process (lm.loaded.load_lm) in the
    form ``backend`` asks for ('kenlm', 'arrays' or 'auto', see lm.loaded), showing the progress
    of first-use work when ``progress``."""
    if lm is not None:
        if options.lm_path is not None or options.unigrams_path is not None:
            raise ValueError("give the language model once: a loaded lm= or options.lm_path / "
                             "unigrams_path, not both")
        return lm
    if options.lm_path is None:
        return None
    return load_lm(options.lm_path, options.unigrams_path, backend=backend,
                   arrays_max_mib=arrays_max_mib, progress=progress)


def create_decoder(name: str, vocab: Vocabulary, *, frame_shift_s: float = 0.02,
                   **options: Any) -> Decoder:
    """Instantiate decoder ``name``; ``options`` must be fields of its Options dataclass."""
    cls = decoder_class(name)
    names = field_names(cls.Options)
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"decoder {name!r} has no option(s) {unknown}; valid: {sorted(names)}")
    return cls(vocab, cls.Options(**options), frame_shift_s=frame_shift_s)

