"""The word trie's child tables (decoders/child_table.py): one contract over the dense and the
sparse layout against a brute-force dict, and the beam search giving the same hypotheses to the
last bit whichever layout its trie holds (letters with an LM, hard lexicon, hotwords, word pieces,
phonemes through a pronunciation lexicon; numpy and torch)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from decoding_fixtures import BEAM_BACKENDS, log_softmax, quartznet_vocab, write_arpa
from test_lexicon import phoneme_vocab
from test_token_sets import LEXICON

import ctclab.decoders.constants as constants
from ctclab.core.arrays import NUMPY
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import create_decoder
from ctclab.decoders.child_table import DenseChildTable, SparseChildTable, child_table

LAYOUTS = {"dense": DenseChildTable, "sparse": SparseChildTable}


def edges(rng: np.random.Generator, nodes: int, columns: int) -> dict[tuple[int, int], int]:
    """A random tree's edges (parent, column) -> child: node k's parent is an earlier node."""
    out: dict[tuple[int, int], int] = {}
    for kid in range(1, nodes):
        while True:
            key = (int(rng.integers(0, kid)), int(rng.integers(0, columns)))
            if key not in out:
                out[key] = kid
                break
    return out


def build(layout: str, known: dict[tuple[int, int], int], capacity: int, columns: int,
          reset: int | None):
    keys = np.array(list(known), np.int64).reshape(-1, 2)
    return LAYOUTS[layout](NUMPY, capacity, columns, reset, keys[:, 0], keys[:, 1],
                           np.array(list(known.values()), np.int64))


def expected(known: dict[tuple[int, int], int], nodes: np.ndarray, cols: np.ndarray,
             reset: int | None) -> list[int]:
    return [known.get((n, c), 0 if c == reset else -1)
            for n, c in zip(nodes.tolist(), cols.tolist(), strict=True)]


@pytest.mark.parametrize("reset", [None, 3])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_lookups_inserts_and_forgetting_match_a_dict(layout, reset):
    rng = np.random.default_rng(1 if reset is None else 2)
    static, columns = 300, 7
    known = edges(rng, static, columns)
    known.pop(next(k for k in known if k[1] == 3), None)   # not every reset cell has an edge
    known.setdefault((5, 3), 6)   # an edge by the reset column overrides its 0
    table = build(layout, known, 2 * static, columns, reset)
    nodes = rng.integers(0, static, 2000)
    cols = rng.integers(0, columns, 2000)
    got = table.lookup(nodes, cols)
    assert got.dtype == np.int64
    assert got.tolist() == expected(known, nodes, cols, reset)
    assert table.one(5, 3) == known[(5, 3)]
    # the search adds nodes static.. below (one child per missing (parent, column) pair)
    missing = [(n, c) for n, c in zip(nodes.tolist(), cols.tolist(), strict=True)
               if (n, c) not in known and c != reset]
    missing = list(dict.fromkeys(missing))[:50]
    added = {key: static + i for i, key in enumerate(missing)}
    table.reserve(4 * static)   # growing keeps every edge
    parents = np.array([k[0] for k in added], np.int64)
    columns_of = np.array([k[1] for k in added], np.int64)
    table.insert(parents, columns_of, np.array(list(added.values()), np.int64))
    assert table.lookup(nodes, cols).tolist() == expected({**known, **added}, nodes, cols, reset)
    assert table.host_rows(static).shape == (static, columns)
    table.forget(static, static + len(added), parents, columns_of, shared=False)
    assert table.lookup(nodes, cols).tolist() == expected(known, nodes, cols, reset)
    # shared unknown nodes: many parents lead to one search node, forgotten by scanning
    table.insert(parents, columns_of, np.full(len(parents), static, np.int64))
    assert int(table.host_rows(static).max()) == static
    table.forget(static, static + 1, parents[:1], columns_of[:1], shared=True)
    assert table.lookup(nodes, cols).tolist() == expected(known, nodes, cols, reset)
    assert int(table.host_rows(static).max()) < static


def test_the_layout_follows_the_dense_tables_size():
    known = {(0, 1): 1, (1, 2): 2}
    keys = np.array(list(known), np.int64)
    kids = np.array(list(known.values()), np.int64)
    args = (NUMPY, 1024, 1001, None, keys[:, 0], keys[:, 1], kids)
    assert isinstance(child_table(*args, max_dense_bytes=1024 * 1001 * 4), DenseChildTable)
    assert isinstance(child_table(*args, max_dense_bytes=1024 * 1001 * 4 - 1), SparseChildTable)


WORDS = {"the": 0.2, "cat": 0.08, "cap": 0.01, "sat": 0.06, "on": 0.1, "mat": 0.04, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.3, ("cat", "sat"): 0.4, ("sat", "on"): 0.5}
PIECES = ["<blank>", "▁the", "▁c", "at", "▁s", "▁m", "▁on", "▁a", "a", "t", "p", "e", "▁"]
LETTER_MODES = {
    "LM, soft lexicon, 3-best": {"nbest": 3},
    "LM, hard lexicon": {"lexicon_mode": "hard"},
    "LM and hotwords": {"hotwords": ("mat",)},
    "LM, no pruning": {"beam_prune_logp": -math.inf, "token_min_logp": -math.inf,
                       "blank_skip_threshold": None, "nbest": 4},
}


def noisy(size: int, seed: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(5, 40))
        logits = rng.normal(size=(n, size))
        logits[np.arange(n), rng.integers(0, size, n)] += 4.0
        out.append(log_softmax(logits))
    return out


def decode_in_both(monkeypatch, vocab, emissions, options) -> tuple[list, list]:
    """Hypotheses with the trie's table dense, then sparse (each a fresh decoder)."""
    out = []
    for limit in (2**62, 0):
        monkeypatch.setattr(constants, "DENSE_CHILD_TABLE_MAX_BYTES", limit)
        dec = create_decoder("beam", vocab, **options)
        kind = type(dec.scorer.trie.children_table)
        assert kind is (DenseChildTable if limit else SparseChildTable)
        out.append(dec.decode_many(emissions))
    return out[0], out[1]


@pytest.mark.parametrize("backend", sorted(BEAM_BACKENDS))
@pytest.mark.parametrize("mode", sorted(LETTER_MODES))
def test_letters_decode_alike_in_both_layouts(tmp_path, monkeypatch, mode, backend):
    vocab = quartznet_vocab()
    arpa = write_arpa(tmp_path / "lm.arpa", WORDS, BIGRAMS)
    options = {"beam_width": 16, "lm_path": str(arpa), **LETTER_MODES[mode],
               **BEAM_BACKENDS[backend]}
    dense, sparse = decode_in_both(monkeypatch, vocab, noisy(vocab.size, len(mode)), options)
    assert sparse == dense
    assert any(h.text for h in dense)


def test_word_pieces_decode_alike_in_both_layouts(tmp_path, monkeypatch):
    vocab = Vocabulary.from_labels(PIECES, blank=0)
    arpa = write_arpa(tmp_path / "lm.arpa", WORDS, BIGRAMS)
    dense, sparse = decode_in_both(monkeypatch, vocab, noisy(vocab.size, 3, 12),
                                   {"beam_width": 16, "lm_path": str(arpa), "nbest": 3})
    assert sparse == dense
    assert any(h.text for h in dense)


def test_phonemes_through_a_lexicon_decode_alike_in_both_layouts(tmp_path, monkeypatch):
    """Shared columns, homophones (to / two) and the hard lexicon's per-beam candidates."""
    vocab = phoneme_vocab()
    lexicon = tmp_path / "lexicon.tsv"
    lexicon.write_text(LEXICON, encoding="utf-8")
    arpa = write_arpa(tmp_path / "lm.arpa", {"to": 0.2, "two": 0.2, "dog": 0.2, "cat": 0.1,
                                             "the": 0.2, "a": 0.1}, {("two", "dog"): 0.5})
    dense, sparse = decode_in_both(monkeypatch, vocab, noisy(vocab.size, 4, 12),
                                   {"beam_width": 16, "lexicon_path": str(lexicon),
                                    "lm_path": str(arpa), "nbest": 3})
    assert sparse == dense
    assert any(h.text for h in dense)
