"""The child table of the word trie (decoders.prefix_trie): which node a (node, column) edge
leads to, for many edges at once, in the search's array namespace.

Two layouts, one contract (tests/test_child_table.py runs both):
- dense: a (nodes, columns) int32 table, one gather per lookup. Letters (29 columns) over a
  70k-word LM take 38 MB (172k known-word nodes, room for twice that);
- sparse: the known words' edges as sorted keys (node * columns + column) searched in one call,
  and a dict for the edges the search adds. A word-piece trie has fewer nodes than a letter
  trie, but a thousand columns and more. A sentencepiece BPE-1000 vocabulary over the shared
  70k-word 3-gram: 104k known-word nodes; dense, 0.8 GB at build (room for twice the nodes)
  and 1.6 GB once a search had grown it, 2.5 GB peak for the process; sparse, 1.6 MB of keys,
  206 MB peak. Its lookups cost a binary search instead of a gather: decoding 40 peaky
  BPE-1000 utterances (6k frames) with the 3-gram took 0.134 s sparse against 0.122 s dense,
  the same texts (building the decoder: 0.97 s against 2.07 s).

The trie picks the layout by the dense table's size (decoders/constants.py,
DENSE_CHILD_TABLE_MAX_BYTES). Both give every lookup the same answer, so the search gives the
same hypotheses either way.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ctclab.core.arrays import Arrays


class DenseChildTable:
    """(capacity, columns) int32: the child id of each (node, column), -1 for none. The reset
    column (the word delimiter's) holds 0, the root, in every row without an edge of its own."""

    def __init__(self, xp: Arrays, capacity: int, columns: int, reset: int | None,
                 parents: np.ndarray, cols: np.ndarray, kids: np.ndarray):
        """parents, cols, kids: (E,) int64 the known words' edges (host arrays)."""
        self.xp, self.reset = xp, reset
        table = np.full((capacity, columns), -1, np.int32)
        if reset is not None:
            table[:, reset] = 0
        table[parents, cols] = kids
        self.table = xp.asarray(table)

    def lookup(self, nodes: Any, cols: Any) -> Any:
        """(n,) int64 child ids of (nodes[i], cols[i]); -1 where there is none."""
        return self.xp.as_int64(self.table[nodes, cols])

    def one(self, node: int, col: int) -> int:
        return int(self.table[node, col])

    def insert(self, nodes: Any, cols: Any, kids: Any) -> None:
        """Add edges (nodes[i], cols[i]) -> kids[i] (new ones, or replacing the search's own)."""
        self.table[nodes, cols] = self.xp.astype(kids, self.table.dtype)

    def reserve(self, capacity: int) -> None:
        """Room for nodes below ``capacity`` (grows, never shrinks)."""
        old = self.table
        if capacity <= old.shape[0]:
            return
        table = self.xp.full((capacity, old.shape[1]), -1, old.dtype)
        if self.reset is not None:
            table[:, self.reset] = 0
        table[: old.shape[0]] = old
        self.table = table

    def forget(self, static_size: int, size: int, parents: Any, cols: Any, shared: bool) -> None:
        """Drop every edge into or out of the search's nodes (ids static_size .. size - 1).
        parents, cols: those nodes' parent and column, when every one of them is its parent's
        child by that column (else ``shared``: unknown partial words share nodes, reached from
        many parents: the known words' rows are scanned instead)."""
        if shared:
            static = self.table[:static_size]
            static[static >= static_size] = -1
        else:
            self.table[parents, cols] = -1
        self.table[static_size:size] = -1
        if self.reset is not None:
            self.table[static_size:size, self.reset] = 0

    def host_rows(self, n: int) -> np.ndarray:
        """(n, columns) int64 host copy of the first n rows (for tests and inspection)."""
        return self.xp.to_numpy(self.table[:n]).astype(np.int64)


class SparseChildTable:
    """The known words' edges as sorted int64 keys node * columns + column with their child ids,
    looked up by one binary search for all queries; the edges the search adds (a few per
    unknown partial word) in a dict, asked only for the queries the sorted keys miss. The reset
    column answers 0 where no edge of its own exists, as the dense table's."""

    def __init__(self, xp: Arrays, capacity: int, columns: int, reset: int | None,
                 parents: np.ndarray, cols: np.ndarray, kids: np.ndarray):
        del capacity   # nothing to reserve: keys are searched, not indexed
        self.xp, self.reset, self.columns = xp, reset, columns
        keys = parents * columns + cols
        order = np.argsort(keys, kind="stable")
        self.keys = xp.asarray(keys[order])
        self.kids = xp.asarray(kids[order].astype(np.int64))
        self.added: dict[int, int] = {}

    def lookup(self, nodes: Any, cols: Any) -> Any:
        xp = self.xp
        query = nodes * self.columns + cols
        n = len(self.keys)
        if n:
            at = xp.minimum(xp.searchsorted(self.keys, query), n - 1)
            kids = xp.where(xp.take(self.keys, at) == query, xp.take(self.kids, at), -1)
        else:
            kids = xp.full(len(query), -1, xp.int64)
        if self.reset is not None:
            kids = xp.where((kids < 0) & (cols == self.reset), 0, kids)
        if self.added and len(kids):
            miss = xp.flatnonzero(kids < 0)
            if len(miss):
                asked = xp.to_numpy(xp.take(query, miss)).tolist()
                found = np.fromiter(map(self.added.get, asked, [-1] * len(asked)), np.int64,
                                    len(asked))
                kids[miss] = xp.asarray(found)
        return kids

    def one(self, node: int, col: int) -> int:
        xp = self.xp
        return int(xp.item(self.lookup(xp.asarray(np.array([node], np.int64)),
                                       xp.asarray(np.array([col], np.int64)))[0]))

    def insert(self, nodes: Any, cols: Any, kids: Any) -> None:
        xp = self.xp
        keys = xp.to_numpy(nodes * self.columns + cols).tolist()
        self.added.update(zip(keys, xp.to_numpy(kids).tolist(), strict=True))

    def reserve(self, capacity: int) -> None:
        del capacity

    def forget(self, static_size: int, size: int, parents: Any, cols: Any, shared: bool) -> None:
        # every edge the search added leads into one of its nodes; the known words' edges all
        # lead to known-word nodes
        del static_size, size, parents, cols, shared
        self.added.clear()

    def host_rows(self, n: int) -> np.ndarray:
        nodes = np.repeat(np.arange(n, dtype=np.int64), self.columns)
        cols = np.tile(np.arange(self.columns, dtype=np.int64), n)
        xp = self.xp
        return xp.to_numpy(self.lookup(xp.asarray(nodes), xp.asarray(cols))).reshape(n, -1)


ChildTable = DenseChildTable | SparseChildTable


def child_table(xp: Arrays, capacity: int, columns: int, reset: int | None, parents: np.ndarray,
                cols: np.ndarray, kids: np.ndarray, max_dense_bytes: int) -> ChildTable:
    """The dense table when (capacity, columns) int32 takes at most ``max_dense_bytes``, else
    the sparse one. parents, cols, kids: (E,) int64 host arrays, the known words' edges."""
    dense = capacity * columns * np.dtype(np.int32).itemsize <= max_dense_bytes
    layout = DenseChildTable if dense else SparseChildTable
    return layout(xp, capacity, columns, reset, parents, cols, kids)
