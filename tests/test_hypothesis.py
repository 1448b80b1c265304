"""The result types: the fast WordTimestamp builder gives what the constructor gives."""
from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import pytest

from ctclab.core.hypothesis import WordTimestamp, word_timestamps

COLUMNS = (["the", "cat", "sat"], [0, 4, 9], [3, 9, 15], [0.0, 0.08, 0.18],
           [0.06, 0.18, 0.3], [0.5, float("nan"), 1.0])


def _constructed() -> list[WordTimestamp]:
    return [WordTimestamp(w, a, b, sa, sb, frame_confidence=fc)
            for w, a, b, sa, sb, fc in zip(*COLUMNS, strict=True)]


def test_builder_matches_constructor_in_every_observable_way() -> None:
    fast, slow = word_timestamps(*COLUMNS), _constructed()
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow, strict=True):
        assert type(f) is WordTimestamp
        # every field, in declaration order (a field the builder missed fails here)
        assert list(vars(f)) == list(vars(s)) == [x.name for x in dataclasses.fields(s)]
        for name in vars(s):
            a, b = getattr(f, name), getattr(s, name)
            assert type(a) is type(b) and (a == b or (math.isnan(a) and math.isnan(b)))
        assert math.isnan(f.confidence)
        assert f == s and hash(f) == hash(s) and repr(f) == repr(s)
        assert pickle.dumps(f) == pickle.dumps(s)
        assert pickle.loads(pickle.dumps(f)) == s
        assert copy.deepcopy(f) == s and dataclasses.replace(f, word="x") == \
            dataclasses.replace(s, word="x")
        assert str(dataclasses.asdict(f)) == str(dataclasses.asdict(s))
        with pytest.raises(dataclasses.FrozenInstanceError):
            f.word = "dog"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del f.start_frame  # type: ignore[misc]
    assert set(fast) == set(slow)


def test_builder_skips_no_checks() -> None:
    # the builder bypasses __init__: a __post_init__ (a validity check) would be skipped
    assert not hasattr(WordTimestamp, "__post_init__")


def test_builder_rejects_ragged_columns() -> None:
    with pytest.raises(ValueError):
        word_timestamps(["a", "b"], [0], [1], [0.0], [0.02], [1.0])
    assert word_timestamps([], [], [], [], [], []) == []
