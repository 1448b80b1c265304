"""Input validation every decoder applies to one utterance's emission (log-probabilities), and
to many at once (the beam checks a whole batch of utterances in a few array operations, on the
concatenation its search reads)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Rows of genuine log-softmax output sum (in probability space) to 1; float16 storage rounds each
# value by up to ~1e-3 relative, so accept a small deviation of the row log-sum-exp from 0.
LOG_SUM_EXP_TOLERANCE = 0.05


def validate_log_probs(log_probs: Any, vocab_size: int, name: str = "log_probs") -> np.ndarray:
    """Check one utterance's emission and return it as a C-contiguous float32 array.

    log_probs: (T, V) natural-log probabilities (log_softmax output), T >= 0, V == vocab_size.
    Raises ValueError naming the problem and the fix: wrong rank, wrong V, NaN/+inf, or values that
    are probabilities or raw logits rather than log-probabilities (checked, never guessed).
    """
    arr = np.asarray(log_probs)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (T, V); got {arr.ndim} dimension(s) {arr.shape}")
    if arr.shape[1] != vocab_size:
        raise ValueError(f"{name} has V={arr.shape[1]} labels per frame but the vocabulary has "
                         f"{vocab_size}; use the vocabulary of the model that made the emissions")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be floating point log-probabilities, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] == 0:
        return arr
    if np.isnan(arr).any() or np.isposinf(arr).any():
        raise ValueError(f"{name} contains NaN or +inf values; check the model output")
    if (arr > 1e-3).any():
        if arr.min() >= 0 and np.allclose(arr.sum(axis=1), 1.0, atol=1e-2):
            raise ValueError(f"{name} holds probabilities (rows in [0, 1] summing to 1), not "
                             "log-probabilities; pass np.log(probs) instead")
        raise ValueError(f"{name} has positive values (max {arr.max():.3g}): these are logits, not "
                         "log-probabilities; apply log_softmax over the last axis first")
    worst = float(np.abs(_logsumexp_rows(arr)).max())
    if worst > LOG_SUM_EXP_TOLERANCE:
        raise ValueError(f"{name} rows do not normalise (a frame's log-sum-exp is {worst:.3g} away "
                         "from 0): apply log_softmax over the last axis first")
    return arr


def _logsumexp_rows(arr: np.ndarray) -> np.ndarray:
    """(T, V) -> (T,) log-sum-exp over the label axis, stable for -inf entries."""
    peak = arr.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(arr - peak).sum(axis=1)) + peak[:, 0]


def emission_arrays(arrays: Sequence[Any], vocab_size: int, name: str = "emission"
                    ) -> list[np.ndarray]:
    """The arrays as C-contiguous float32, after validate_log_probs' checks that need no values
    (rank, V, dtype): a failing one raises its error, naming ``name``[i]. The values are checked
    by masses_look_valid (with validate_log_probs for the precise error)."""
    out = []
    for index, raw in enumerate(arrays):
        arr = np.asarray(raw)
        # (dtype.kind "f" is np.issubdtype(dtype, np.floating), without its Python layers:
        # ~1.5 us an utterance)
        if arr.ndim != 2 or arr.shape[1] != vocab_size or arr.dtype.kind != "f":
            validate_log_probs(arr, vocab_size, f"{name}[{index}]")  # raises the precise error
        out.append(np.ascontiguousarray(arr, dtype=np.float32))
    return out


def masses_look_valid(top: float, masses: np.ndarray) -> bool:
    """What validate_log_probs checks on the values, for many rows at once, from the largest
    value of them all (``top``) and each row's probability mass (sum of exp over its labels,
    float32 as the values): no NaN or +inf (top is NaN or inf then), no value above 1e-3,
    every row's probabilities sum to 1 within LOG_SUM_EXP_TOLERANCE. False: some row fails;
    validate_log_probs on each utterance names it. (The beam takes both from its frame
    statistics, decoders/search_schedule.py: one pass over the emissions for both.)"""
    if not top <= 1e-3:  # NaN fails the compare too
        return False
    return not len(masses) or bool(math.exp(-LOG_SUM_EXP_TOLERANCE) <= masses.min()
                                   and masses.max() <= math.exp(LOG_SUM_EXP_TOLERANCE))
