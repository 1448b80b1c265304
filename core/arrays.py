"""Array namespaces: the few array operations the beam search and the array LM are written in,
for numpy (the CPU) and torch (CPU or CUDA), so that one piece of code runs on either.

    xp = arrays_for("cpu")            # numpy; torch is not imported
    xp = arrays_for("cuda")           # torch on the GPU (ValueError when there is none)
    xp = torch_arrays("cpu")          # torch on the CPU: the GPU's code path, testable anywhere
    a = xp.asarray(np.arange(5))      # host -> device;  xp.to_numpy(a): device -> host

Code written against a namespace uses its methods for everything the two libraries spell
differently (take, where, cumsum, repeat, nonzero, sorting, segment reductions, creation) and
plain Python operators (+ - * == & | ~, slicing, integer and boolean indexing, in-place updates)
for what they spell alike. Scores are float64 and indices int64 on every backend (torch's default
float32 never appears: every float array is made with an explicit dtype).

The numpy namespace binds numpy's own callables (ufuncs and ndarray methods) so that it adds no
Python layer to an operation: the CPU search is dominated by the fixed cost of each call on small
arrays, not by the arithmetic. (logaddexp is the exception: on large arrays it leaves the pairs
holding a -inf to a maximum, LOGADDEXP_SPARSE_MIN_PAIRS.) array-api-compat would give the
standard names, at the price of a wrapper per call on numpy, and it still lacks segment
reductions.

Results are bit-identical between numpy and torch on the CPU where both do the same IEEE
operations (adds, multiplies, comparisons, gathers); transcendental functions (log, exp,
logaddexp) may differ in the last unit in the last place between libraries and devices (see
decoders/constants.py, BACKEND_SCORE_TOLERANCE).
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

NEG_INF = -math.inf
DEVICES = ("auto", "cpu", "cuda", "mps")
ARRAY_BACKENDS = ("auto", "numpy", "torch")


def _undispatched(function: Callable[..., Any]) -> Callable[..., Any]:
    """numpy's own implementation behind a public function, without its ``__array_function__``
    dispatch (a Python-level dispatcher call, ~0.15 us: a tenth of a small where); the search
    only passes ndarrays, which no override could claim. The function itself where numpy has no
    such attribute."""
    return getattr(function, "_implementation", function)


_copyto = _undispatched(np.copyto)
_logaddexp, _maximum, _minimum = np.logaddexp, np.maximum, np.minimum
_count_nonzero = _undispatched(np.count_nonzero)

# From this many pairs on, NumpyArrays.logaddexp computes only the pairs where both terms are
# finite, when they are at most a third of them. In a search step most beams hold no blank-ending
# or no non-blank-ending mass (-inf): on a test-clean-sized peaky corpus 99% of the pairs, where
# logaddexp spends an exp and a log1p (~12 ns) to return the finite term. Measured at 3,000 pairs:
# 29 -> 7 us with 1% finite pairs, 32 -> 14 us with 10%; the extra calls (~3 us) lose below
# ~500 pairs, and above a third of the pairs finite the masked loop costs more than the plain one.
LOGADDEXP_SPARSE_MIN_PAIRS = 1024


class NumpyArrays:
    """The numpy namespace (host memory)."""

    name = "numpy"
    device = "cpu"
    int64, float64, float32, bool_ = np.int64, np.float64, np.float32, np.bool_
    # numpy's own callables (staticmethod: stored, never bound to the namespace object)
    add = staticmethod(np.add)                            # add(a, b[, out=])
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    isfinite = staticmethod(np.isfinite)
    isneginf = staticmethod(np.isneginf)
    exp = staticmethod(np.exp)
    where = staticmethod(_undispatched(np.where))
    take = staticmethod(np.ndarray.take)                  # take(a, idx[, axis])
    cumsum = staticmethod(np.ndarray.cumsum)              # 1-D
    repeat = staticmethod(np.ndarray.repeat)              # a[i] counts[i] times (1-D)
    searchsorted = staticmethod(np.ndarray.searchsorted)  # searchsorted(sorted, values)
    concat = staticmethod(_undispatched(np.concatenate))   # concat(seq, axis)
    stack = staticmethod(_undispatched(np.stack))
    lexsort = staticmethod(_undispatched(np.lexsort))      # lexsort((minor, ..., major)): stable
    bincount = staticmethod(_undispatched(np.bincount))
    # reductions as the ufuncs' own reduce (ndarray.min / max / any add a Python layer):
    # amin(a), amax(a), any(a) of a 1-D array, any(a, 1) per row of a 2-D one
    amin = staticmethod(np.minimum.reduce)
    amax = staticmethod(np.maximum.reduce)
    any = staticmethod(np.logical_or.reduce)

    @staticmethod
    def logaddexp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """np.logaddexp(a, b), to the bit; cheaper where most pairs hold a -inf. numpy's
        logaddexp(x, -inf) is x + log1p(exp(-inf)) = x + 0.0 (and -inf for two -inf), so
        maximum(a, b) + 0.0 is that pair's result bit for bit (+ 0.0: -0.0 becomes +0.0 as there);
        only the pairs of two finite terms go through logaddexp itself
        (LOGADDEXP_SPARSE_MIN_PAIRS)."""
        if a.size < LOGADDEXP_SPARSE_MIN_PAIRS:
            return _logaddexp(a, b)
        both = _minimum(a, b) > NEG_INF
        if 3 * _count_nonzero(both) > both.size:
            return _logaddexp(a, b)
        out = _maximum(a, b)
        out += 0.0
        return _logaddexp(a, b, out=out, where=both)

    @staticmethod
    def asarray(x: Any, dtype: Any = None) -> np.ndarray:
        return np.asarray(x, dtype)

    @staticmethod
    def to_numpy(a: Any) -> np.ndarray:
        return np.asarray(a)

    empty = staticmethod(np.empty)                        # empty(shape, dtype)
    zeros = staticmethod(np.zeros)                        # zeros(shape, dtype)

    @staticmethod
    def full(shape: int | tuple[int, ...], value: float, dtype: Any) -> np.ndarray:
        out = np.empty(shape, dtype)   # np.full's Python layer costs more than the fill
        out.fill(value)
        return out

    @staticmethod
    def arange(n: int, start: int = 0) -> np.ndarray:
        """(n,) int64: start, start + 1, ..."""
        return np.arange(start, start + n, dtype=np.int64)

    @staticmethod
    def flatnonzero(mask: np.ndarray) -> np.ndarray:
        """(k,) int64 positions of the true entries of a 1-D mask."""
        return mask.nonzero()[0]

    _range = np.arange(4096, dtype=np.int64)

    @classmethod
    def repeat_range(cls, counts: np.ndarray) -> np.ndarray:
        """i repeated counts[i] times, for i in range(len(counts))."""
        n = len(counts)
        if len(cls._range) < n:
            cls._range = np.arange(2 * n, dtype=np.int64)
        return cls._range[:n].repeat(counts)

    @staticmethod
    def argsort(a: np.ndarray) -> np.ndarray:
        """Stable argsort of a 1-D array."""
        return a.argsort(kind="stable")

    @staticmethod
    def copy(a: np.ndarray) -> np.ndarray:
        return a.copy()

    @staticmethod
    def count_below(sorted_: np.ndarray, value: int) -> int:
        """How many entries of the sorted 1-D array are < value."""
        return int(sorted_.searchsorted(value))

    @staticmethod
    def unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted unique values, index of each entry of ``a`` in them)."""
        return np.unique(a, return_inverse=True)

    @staticmethod
    def segment_max(values: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
        """(n,) max of ``values`` per segment id (-inf for an empty segment)."""
        out = np.empty(n)
        out.fill(NEG_INF)
        np.maximum.at(out, segments, values)
        return out

    @staticmethod
    def segment_max_into(out: np.ndarray, segments: np.ndarray, values: np.ndarray) -> None:
        """out[s] = max(out[s], values of segment s), in place."""
        np.maximum.at(out, segments, values)

    @staticmethod
    def segment_top(values: np.ndarray, segments: np.ndarray, counts: np.ndarray, k: int
                    ) -> np.ndarray:
        """Positions (in no particular order) of the k largest values of each segment, equal
        values taken first come first (what a stable sort by segment, then value descending,
        keeps). counts: (n_segments,) entries per segment, each segment present holding more
        than k; values finite."""
        n = len(values)
        if n < _TOP_BY_SORT_MAX or k < 1:
            return _segment_top_lexsort(NUMPY, values, segments, counts, k)
        # Large pools: the k-th largest value of each segment from one sort of a (segments,
        # widest) grid, then every value above it and the first equal ones. numpy sorts floats
        # stably only by merge sort (~5x slower than its SIMD sort) and small ints by radix
        # sort: a stable lexsort by (segment, value) cost ~10 ms at 100,000 entries, this ~4.
        key = segments.astype(np.int16) if len(counts) <= np.iinfo(np.int16).max else segments
        by_seg = key.argsort(kind="stable")    # grouped, pool order within a segment
        seg, v = segments.take(by_seg), values.take(by_seg)
        present = counts > k
        sizes = np.where(present, counts, 0)
        start = np.cumsum(sizes) - sizes
        row = (np.cumsum(present) - 1).take(seg)
        width = int(sizes.max())
        n_rows = int(np.count_nonzero(present))
        grid = np.empty(n_rows * width)
        grid.fill(NEG_INF)
        grid[row * width + (np.arange(n) - start.take(seg))] = v
        rows = grid.reshape(n_rows, width)
        rows.sort(axis=1)
        kth = rows[:, width - k].take(row)
        above = v > kth
        tie = v == kth
        ties_before = np.cumsum(tie)
        first = start[present]
        ties_before -= (ties_before.take(first) - tie.take(first)).take(row)
        room = k - np.bincount(row, above, minlength=n_rows).astype(np.int64)
        return by_seg[above | (tie & (ties_before <= room.take(row)))]

    @staticmethod
    def copy_where(dst: np.ndarray, src: Any, mask: np.ndarray) -> None:
        """dst[mask] = src[mask] in place (src broadcast against dst)."""
        _copyto(dst, src, where=mask)

    @staticmethod
    def as_int64(a: np.ndarray) -> np.ndarray:
        return a.astype(np.int64)

    @staticmethod
    def astype(a: np.ndarray, dtype: Any) -> np.ndarray:
        return a.astype(dtype)

    @staticmethod
    def item(a: Any) -> Any:
        item = getattr(a, "item", None)   # numpy arrays and scalars (cheaper than isinstance)
        return a if item is None else item()


class TorchArrays:
    """The torch namespace on one device ("cpu", "cuda", "cuda:1"). Import torch lazily: only
    building one imports it."""

    name = "torch"

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.int64, self.float64, self.float32, self.bool_ = (torch.int64, torch.float64,
                                                              torch.float32, torch.bool)
        self.logaddexp = torch.logaddexp
        self.add = torch.add
        self.isfinite = torch.isfinite
        self.isneginf = torch.isneginf
        self.exp = torch.exp
        self.cumsum = lambda a: torch.cumsum(a, 0)
        self.stack = torch.stack
        self.bincount = lambda x, minlength=0: torch.bincount(x, minlength=minlength)

    def __repr__(self) -> str:
        return f"TorchArrays({str(self.device)!r})"

    # ------------------------------------------------------------------------- creation
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=dtype or x.dtype)
        arr = np.asarray(x)
        if not arr.flags.writeable:  # torch tensors are writable: never alias read-only memory
            arr = arr.copy()
        return torch.as_tensor(arr, device=self.device, dtype=dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        if isinstance(a, self.torch.Tensor):
            return a.detach().cpu().numpy()
        return np.asarray(a)

    def empty(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device=self.device)

    def zeros(self, shape: int | tuple[int, ...], dtype: Any) -> Any:
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def full(self, shape: int | tuple[int, ...], value: float, dtype: Any) -> Any:
        return self.torch.full(shape if isinstance(shape, tuple) else (shape,), value,
                               dtype=dtype, device=self.device)

    def arange(self, n: int, start: int = 0) -> Any:
        return self.torch.arange(start, start + n, dtype=self.torch.int64, device=self.device)

    # ------------------------------------------------------------------------- indexing
    def take(self, a: Any, idx: Any, axis: int | None = None) -> Any:
        if axis is None:
            return a.take(idx)
        return a.index_select(axis, idx)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b)

    def repeat(self, a: Any, counts: Any) -> Any:
        # repeat_interleave of a view reads its whole base tensor (ms for a slice of a large
        # arange): repeat a copy
        return self.torch.repeat_interleave(a if a._base is None else a.clone(), counts)

    def repeat_range(self, counts: Any) -> Any:
        """i repeated counts[i] times, for i in range(len(counts))."""
        return self.torch.repeat_interleave(counts)

    def _tensors(self, a: Any, b: Any) -> tuple[Any, Any]:
        """a and b as tensors, a Python number on either side taking the other's dtype and
        device (numpy's broadcasting of scalars)."""
        torch = self.torch
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        elif not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        return a, b

    def maximum(self, a: Any, b: Any) -> Any:
        """Elementwise max; either side may be a Python number."""
        return self.torch.maximum(*self._tensors(a, b))

    def minimum(self, a: Any, b: Any) -> Any:
        """Elementwise min; either side may be a Python number."""
        return self.torch.minimum(*self._tensors(a, b))

    def flatnonzero(self, mask: Any) -> Any:
        return self.torch.nonzero(mask).reshape(-1)

    def copy_where(self, dst: Any, src: Any, mask: Any) -> None:
        dst.copy_(self.torch.where(mask, src, dst))

    def concat(self, seq: Sequence[Any], axis: int = 0) -> Any:
        return self.torch.cat(list(seq), dim=axis)

    def copy(self, a: Any) -> Any:
        return a.clone()

    def as_int64(self, a: Any) -> Any:
        return a.to(self.torch.int64)

    def astype(self, a: Any, dtype: Any) -> Any:
        return a.to(dtype)

    @staticmethod
    def item(a: Any) -> Any:
        return a.item() if hasattr(a, "item") else a

    # ------------------------------------------------------------------------- sorting
    def argsort(self, a: Any) -> Any:
        return self.torch.argsort(a, stable=True)

    def lexsort(self, keys: Sequence[Any]) -> Any:
        """numpy.lexsort: the last key is the primary one; stable."""
        order = self.torch.argsort(keys[0], stable=True)
        for key in keys[1:]:
            order = order[self.torch.argsort(key[order], stable=True)]
        return order

    def searchsorted(self, sorted_: Any, values: Any) -> Any:
        return self.torch.searchsorted(sorted_, values)

    def count_below(self, sorted_: Any, value: int) -> int:
        return int((sorted_ < value).sum())

    def unique_inverse(self, a: Any) -> tuple[Any, Any]:
        return self.torch.unique(a, sorted=True, return_inverse=True)

    # ------------------------------------------------------------------------- reductions
    @staticmethod
    def amin(a: Any) -> Any:
        return a.amin()

    @staticmethod
    def amax(a: Any) -> Any:
        return a.amax()

    @staticmethod
    def any(a: Any, axis: int | None = None) -> Any:
        return a.any() if axis is None else a.any(axis)

    def segment_max(self, values: Any, segments: Any, n: int) -> Any:
        out = self.full(n, NEG_INF, values.dtype)
        return out.scatter_reduce_(0, segments, values, "amax")

    def segment_max_into(self, out: Any, segments: Any, values: Any) -> None:
        out.scatter_reduce_(0, segments, values, "amax")

    def segment_top(self, values: Any, segments: Any, counts: Any, k: int) -> Any:
        return _segment_top_lexsort(self, values, segments, counts, k)


class Arrays(Protocol):
    """What code written against a namespace may use (NumpyArrays and TorchArrays provide it).
    Arrays are typed Any: numpy arrays or torch tensors. Members are read-only: numpy's are
    its own callables stored on the class, torch's are methods."""

    @property
    def name(self) -> str: ...
    @property
    def device(self) -> Any: ...
    @property
    def int64(self) -> Any: ...
    @property
    def float64(self) -> Any: ...
    @property
    def float32(self) -> Any: ...
    @property
    def bool_(self) -> Any: ...
    @property
    def asarray(self) -> Callable[..., Any]: ...
    @property
    def to_numpy(self) -> Callable[..., np.ndarray]: ...
    @property
    def empty(self) -> Callable[..., Any]: ...
    @property
    def zeros(self) -> Callable[..., Any]: ...
    @property
    def full(self) -> Callable[..., Any]: ...
    @property
    def arange(self) -> Callable[..., Any]: ...
    @property
    def take(self) -> Callable[..., Any]: ...
    @property
    def where(self) -> Callable[..., Any]: ...
    @property
    def logaddexp(self) -> Callable[..., Any]: ...
    @property
    def add(self) -> Callable[..., Any]: ...
    @property
    def maximum(self) -> Callable[..., Any]: ...
    @property
    def minimum(self) -> Callable[..., Any]: ...
    @property
    def isfinite(self) -> Callable[..., Any]: ...
    @property
    def isneginf(self) -> Callable[..., Any]: ...
    @property
    def exp(self) -> Callable[..., Any]: ...
    @property
    def cumsum(self) -> Callable[..., Any]: ...
    @property
    def repeat(self) -> Callable[..., Any]: ...
    @property
    def repeat_range(self) -> Callable[..., Any]: ...
    @property
    def flatnonzero(self) -> Callable[..., Any]: ...
    @property
    def concat(self) -> Callable[..., Any]: ...
    @property
    def stack(self) -> Callable[..., Any]: ...
    @property
    def copy(self) -> Callable[..., Any]: ...
    @property
    def count_below(self) -> Callable[..., int]: ...
    @property
    def copy_where(self) -> Callable[..., None]: ...
    @property
    def as_int64(self) -> Callable[..., Any]: ...
    @property
    def astype(self) -> Callable[..., Any]: ...
    @property
    def item(self) -> Callable[..., Any]: ...
    @property
    def argsort(self) -> Callable[..., Any]: ...
    @property
    def lexsort(self) -> Callable[..., Any]: ...
    @property
    def searchsorted(self) -> Callable[..., Any]: ...
    @property
    def unique_inverse(self) -> Callable[..., Any]: ...
    @property
    def bincount(self) -> Callable[..., Any]: ...
    @property
    def amin(self) -> Callable[..., Any]: ...
    @property
    def amax(self) -> Callable[..., Any]: ...
    @property
    def any(self) -> Callable[..., Any]: ...
    @property
    def segment_max(self) -> Callable[..., Any]: ...
    @property
    def segment_max_into(self) -> Callable[..., None]: ...
    @property
    def segment_top(self) -> Callable[..., Any]: ...



NUMPY: Arrays = NumpyArrays()

# segment_top on numpy: below this many values a lexsort (fewer calls), from it on the sort of
# a grid (less work); both keep the same entries.
_TOP_BY_SORT_MAX = 4096


def _segment_top_lexsort(xp: Arrays, values: Any, segments: Any, counts: Any, k: int) -> Any:
    """segment_top by a stable sort by (segment, value descending); when one segment holds all
    the values (the usual case in a search step: one utterance over the beam width), a stable
    sort of the values alone, the same order."""
    wide = counts > k
    if int(xp.item(wide.sum())) == 1:
        return xp.argsort(-values)[:k]
    order = xp.lexsort((-values, segments))
    over = xp.where(wide, counts, 0)
    first = xp.cumsum(over) - over
    rank = xp.arange(len(order)) - xp.take(first, xp.take(segments, order))
    return order[rank < k]


def torch_arrays(device: str = "cpu") -> Arrays:
    """The torch namespace on ``device``; ValueError when torch or the device is missing."""
    if importlib.util.find_spec("torch") is None:
        raise ValueError(f"device {device!r} needs torch, which is not installed (pip install "
                         "torch); use --device cpu")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested but torch sees no CUDA GPU (CPU-only "
                         "torch build or no driver); use --device cpu")
    return TorchArrays(device)


def on_gpu(xp: Arrays) -> bool:
    """True when ``xp`` computes on a CUDA GPU (torch on a cuda device)."""
    return xp.name == "torch" and str(xp.device).startswith("cuda")


def gpu_present() -> bool:
    """True when a CUDA GPU is usable, found without importing torch when it is not loaded yet
    (the driver's device files first; torch only when they exist)."""
    if importlib.util.find_spec("torch") is None:
        return False
    if "torch" not in sys.modules and not (os.path.exists("/proc/driver/nvidia/gpus")
                                           or os.path.exists("/dev/nvidia0")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def arrays_for(device: str = "auto", backend: str = "auto") -> Arrays:
    """The namespace for a device option ("auto", "cpu", "cuda", "cuda:N", "mps") and an array
    backend ("auto", "numpy", "torch"), as the emission stage reads its device: auto = CUDA when
    a GPU is present, else the CPU. On the CPU "auto" is numpy (the fastest there; torch is not
    imported); "torch" on the CPU runs the GPU's code path. "mps" (an Apple GPU, which has no
    float64) searches on the CPU. Raises ValueError for impossible pairs."""
    kind = device.split(":")[0]
    if kind not in DEVICES or (kind != "cuda" and ":" in device):
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if kind == "mps":
        device = kind = "cpu"
    if backend not in ARRAY_BACKENDS:
        raise ValueError(f"unknown array backend {backend!r}; valid: {', '.join(ARRAY_BACKENDS)}")
    if kind == "auto":
        device = "cuda" if gpu_present() else "cpu"
        kind = device
    if kind == "cuda":
        if backend == "numpy":
            raise ValueError("the numpy arrays live on the CPU: use --device cpu with "
                             "--array-backend numpy, or --array-backend torch (or auto) on cuda")
        return torch_arrays(device)
    return torch_arrays("cpu") if backend == "torch" else NUMPY
