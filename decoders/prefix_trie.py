"""A trie over acoustic token ids that names every partial word the beam search spells.

Node 0 is the empty word. Nodes for known words (the lexicon / unigram list, and hotwords) are built
up front; a partial word outside the lexicon gets a node the first time a beam spells it, so every
partial word has one integer id the search can carry in an array. The child table is dense
(nodes x columns int32) so that one gather maps many (node, label) pairs to children at once,
unless that table would be too large (word pieces: a thousand columns and more): then the edges
are sorted keys searched in one call (decoders.child_table). Columns are the labels themselves,
or for a large token set whose words come from a pronunciation lexicon (phonemes) the tokens the
lexicon uses plus one shared column for all others (partial words off the lexicon then share
nodes: they have no text of their own to tell apart). A node may end several words (homophones
of a pronunciation lexicon): words_of() lists them.

The trie is built in numpy on the host and its arrays then live in the search's array namespace
(ctclab.core.arrays: numpy, or torch on the CPU or a GPU); the search-time methods (children,
static_children, forget_search_nodes, spellings) are written against it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ctclab.core.arrays import NUMPY, Arrays
from ctclab.decoders import constants
from ctclab.decoders.child_table import ChildTable, child_table

_INITIAL_CAPACITY = 1024


class WordTrie:
    """Trie over label ids. Arrays are indexed by node id.

    in_lexicon[n]: n is a prefix of a known word (False for nodes created during search).
    word_index[n]: index into ``words`` when n spells a known word exactly, else -1.
    depth[n]: labels in the partial word. parent[n] / label[n]: the edge into n (-1 at the root).
    """

    def __init__(self, vocab_size: int, spellings: Iterable[Sequence[int]] = (),
                 words: Sequence[str] = (), owners: Sequence[int] | None = None,
                 shared_columns: bool = False, xp: Arrays = NUMPY, reset: int | None = None):
        """spellings[k]: label ids spelling words[owners[k]] (owners default: k), words in the LM's
        own casing. shared_columns: give the child table one column per token the spellings use
        plus one for all others (for pronunciation lexicons over large token sets). xp: the
        array namespace the search runs in. reset: a label (the word delimiter) whose child of
        every node is the root, so that one lookup moves every extension (ends its word); not
        with shared_columns, where the delimiter shares a column."""
        self.xp = xp
        self.vocab_size = int(vocab_size)
        self.words: list[str] = list(words)
        self.has_lexicon = False
        spellings = spellings if isinstance(spellings, (list, tuple)) else list(spellings)
        owners = range(len(spellings)) if owners is None else owners
        self.columns: np.ndarray | None = None
        width = self.vocab_size
        if shared_columns:
            used = sorted({int(t) for sp in spellings for t in sp})
            self.columns = np.full(self.vocab_size, len(used), np.int64)
            self.columns[used] = np.arange(len(used))
            width = len(used) + 1
        self.width = width   # columns of the child table
        col = self.columns
        # Build with Python dicts (one pass over the lexicon), then move into dense arrays.
        edges: dict[tuple[int, int], int] = {}
        parents, labels = [-1], [-1]
        terminal: dict[int, int] = {}          # node -> its first word
        more: dict[int, list[int]] = {}        # node -> its other words (homophones; rare)
        for index, spelling in enumerate(spellings):
            node = 0
            for label in spelling:
                key = (node, int(label) if col is None else int(col[label]))
                child = edges.get(key)
                if child is None:
                    child = len(parents)
                    edges[key] = child
                    parents.append(node)
                    labels.append(int(label))
                node = child
            if node:
                self.has_lexicon = True
                owner = owners[index]
                first = terminal.setdefault(node, owner)
                if first != owner and owner not in more.setdefault(node, []):
                    more[node].append(owner)
        count = len(parents)
        capacity = max(_INITIAL_CAPACITY, 2 * count)
        self.size = count
        self.static_size = count  # nodes of known words; later ones are made during search
        # the reset label's column: node 0 (the root) everywhere, also in rows not used yet
        self.reset = reset if not shared_columns else None
        self.parent = np.full(capacity, -1, np.int64)
        self.label = np.full(capacity, -1, np.int64)
        self.depth = np.zeros(capacity, np.int64)
        self.in_lexicon = np.zeros(capacity, bool)
        self.word_index = np.full(capacity, -1, np.int64)
        self.parent[:count] = parents
        self.label[:count] = labels
        self.in_lexicon[:count] = True
        keys = np.array(list(edges.keys()), np.int64).reshape(-1, 2)
        kids = np.array(list(edges.values()), np.int64)
        self.children_table: ChildTable = child_table(
            xp, capacity, width, self.reset, keys[:, 0], keys[:, 1], kids,
            constants.DENSE_CHILD_TABLE_MAX_BYTES)
        if edges:
            # Parents always precede children in creation order, so one pass fills depths.
            for node in range(1, count):
                self.depth[node] = self.depth[parents[node]] + 1
        # words_of(n) = node_words[word_first[n]: word_first[n] + word_count[n]]
        self.word_count = np.zeros(count, np.int64)
        self.word_first = np.zeros(count, np.int64)
        flat: list[int] = []
        if terminal:
            nodes = np.fromiter(terminal.keys(), np.int64, len(terminal))
            self.word_index[nodes] = np.fromiter(terminal.values(), np.int64, len(terminal))
            self.word_count[nodes] = 1
            for node, others in more.items():
                self.word_count[node] += len(others)
            self.word_first[nodes] = np.cumsum(self.word_count[nodes]) - self.word_count[nodes]
            flat = [w for node, first in terminal.items() for w in (first, *more.get(node, ()))]
        self.node_words = np.array(flat, np.int64)
        self.max_homophones = int(self.word_count.max(initial=0)) or 1
        # host copies of what never changes after the build (word tables read them)
        self.host_word_index = self.word_index[:count].copy()
        self.host_in_lexicon = self.in_lexicon[:count].copy()
        # share_unknown_prefixes(): node id of the one unknown partial word of each depth
        # (index 0 unused); None: every unknown partial word gets a node of its own
        self._unknown: list[int] | None = None
        self._to(xp)
        self._static_children: tuple[Any, Any, Any] | None = None

    _ARRAYS = ("parent", "label", "depth", "in_lexicon", "word_index", "word_count",
               "word_first", "node_words", "columns")

    def _to(self, xp: Arrays) -> None:
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, xp.asarray(value))

    # ----------------------------------------------------------------------------- lookups
    def children(self, nodes: Any, labels: Any) -> Any:
        """(n,) int64 child node ids of (nodes[i], labels[i]); creates nodes for unseen partial
        words."""
        xp = self.xp
        if self.columns is not None:
            labels = xp.take(self.columns, labels)
        kids = self.children_table.lookup(nodes, labels)
        if len(kids) and xp.item(xp.amin(kids)) < 0:
            missing = xp.flatnonzero(kids < 0)
            if self._unknown is not None:
                kids[missing] = self._to_unknown(xp.take(nodes, missing),
                                                 xp.take(labels, missing))
                return kids
            width = self.width
            keys = xp.take(nodes, missing) * width + xp.take(labels, missing)
            unique, inverse = xp.unique_inverse(keys)
            new_ids = self._add(unique // width, unique % width)
            kids[missing] = xp.take(new_ids, inverse)
        return kids

    def share_unknown_prefixes(self) -> None:
        """From now on all partial words off the known words of one depth (labels) are one node,
        whatever their labels: the node of the unknown partial word of that depth. Only for
        callers whose scores depend on nothing else of an unknown partial word (the word scorer
        checks that no label sequence off the trie can spell a word it would score differently);
        spellings() of such nodes are meaningless. Call before the search makes nodes."""
        if self.size != self.static_size:
            raise RuntimeError("share_unknown_prefixes() after the search made nodes")
        self._unknown = [-1]

    @property
    def shares_unknown_prefixes(self) -> bool:
        return self._unknown is not None

    def _to_unknown(self, parents: Any, columns: Any) -> Any:
        """The unknown-word nodes one label deeper than ``parents`` (made as needed), recorded as
        the children of (parents, columns) so that the next lookup finds them directly."""
        xp, chain = self.xp, self._unknown
        assert chain is not None
        depth = xp.take(self.depth, parents) + 1
        top = int(xp.item(xp.amax(depth)))
        if top >= len(chain):
            new = top + 1 - len(chain)
            start = self.size
            if start + new > len(self.parent):
                self._grow(start + new)
            depths = xp.arange(new, len(chain))
            self.parent[start:start + new] = xp.asarray(
                np.array([chain[-1] if len(chain) > 1 else 0] + list(range(start, start + new - 1)),
                         np.int64))
            self.depth[start:start + new] = depths
            self.size = start + new
            chain.extend(range(start, start + new))
            self._unknown_ids = xp.asarray(np.array(chain, np.int64))
        target = xp.take(self._unknown_ids, depth)
        self.children_table.insert(parents, columns, target)
        return target

    def child_of(self, node: int, label: int) -> int:
        """The child of ``node`` by ``label`` among the nodes built so far, or -1 (0: the reset
        label's)."""
        column = label if self.columns is None else int(self.columns[label])
        return self.children_table.one(node, column)

    def static_children(self) -> tuple[Any, Any, Any]:
        """Children of the known-word nodes in CSR form: (start (static_size + 1,), label, child):
        node n's children are child[start[n]:start[n + 1]], reached by label[...] (token ids)."""
        if self._static_children is None:
            xp = self.xp
            n = self.static_size
            kids = xp.arange(n - 1, 1)
            parents = self.parent[1:n]
            order = xp.argsort(parents)
            start = xp.searchsorted(xp.take(parents, order), xp.arange(n + 1))
            self._static_children = (xp.as_int64(start), xp.take(self.label, xp.take(kids, order)),
                                     xp.take(kids, order))
        return self._static_children

    def words_of(self, node: int) -> list[int]:
        """Word ids that ``node`` spells (several for homophones; [] for none)."""
        if node >= self.static_size:
            return []
        first = int(self.word_first[node])
        return self.xp.to_numpy(self.node_words[first:first + int(self.word_count[node])]
                                ).tolist()

    def _add(self, parents: Any, labels: Any) -> Any:
        xp = self.xp
        start, count = self.size, len(parents)
        if start + count > len(self.parent):
            self._grow(start + count)
        ids = xp.arange(count, start)
        self.children_table.insert(parents, labels, ids)  # labels are columns
        self.parent[start:start + count] = parents
        self.label[start:start + count] = labels
        self.depth[start:start + count] = xp.take(self.depth, parents) + 1
        self.size = start + count
        return ids

    def _grow(self, needed: int) -> None:
        xp = self.xp
        capacity = max(needed, 2 * len(self.parent))

        def grown(arr: Any, fill: float) -> Any:
            out = xp.full((capacity, *arr.shape[1:]), fill, arr.dtype)
            out[: len(arr)] = arr
            return out

        self.children_table.reserve(capacity)
        self.parent = grown(self.parent, -1)
        self.label = grown(self.label, -1)
        self.depth = grown(self.depth, 0)
        self.in_lexicon = grown(self.in_lexicon, False)
        self.word_index = grown(self.word_index, -1)

    def forget_search_nodes(self) -> None:
        """Drop the nodes made during search (keeps memory bounded across many batches)."""
        made = slice(self.static_size, self.size)
        # edges into the shared nodes are not (parent, label): the table finds them itself
        shared = self._unknown is not None
        self.children_table.forget(self.static_size, self.size, self.parent[made],
                                   self.label[made], shared)
        if shared:
            self._unknown = [-1]
        self.parent[made], self.label[made], self.depth[made] = -1, -1, 0
        self.size = self.static_size

    def spelling(self, node: int) -> list[int]:
        """Label ids of the partial word at ``node``, first label first."""
        return self.spellings(self.xp.asarray(np.array([node], np.int64)))[0]

    def spellings(self, nodes: Any) -> list[list[int]]:
        """Label ids of the partial words at ``nodes`` ((n,) int64), first label first: one walk
        up the trie for all of them, one copy to the host."""
        xp = self.xp
        steps = []
        cur = nodes
        while len(cur) and xp.item((cur > 0).any()):
            steps.append(xp.where(cur > 0, xp.take(self.label, xp.maximum(cur, 0)), -1))
            cur = xp.where(cur > 0, xp.take(self.parent, xp.maximum(cur, 0)), 0)
        if not steps:
            return [[] for _ in range(len(nodes))]
        table = xp.to_numpy(xp.stack(steps[::-1], 1)).tolist()
        return [[t for t in row if t >= 0] for row in table]

    def find(self, spelling: Sequence[int]) -> int:
        """Node id spelling exactly ``spelling``, or -1 when it does not exist (yet)."""
        node = 0
        for label in spelling:
            node = self.child_of(node, int(label))
            if node < 0:
                return -1
        return node

