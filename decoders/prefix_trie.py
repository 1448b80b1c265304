"""A character trie over acoustic label ids that names every partial word the beam search spells.

Node 0 is the empty word. Nodes for known words (the lexicon / unigram list, and hotwords) are built
up front; a partial word outside the lexicon gets a node the first time a beam spells it, so every
partial word has one integer id the search can carry in an array. The child table is dense
(nodes x V int32) so that one fancy-index step maps many (node, label) pairs to children at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_INITIAL_CAPACITY = 1024


class WordTrie:
    """Trie over label ids. Arrays are indexed by node id.

    in_lexicon[n]: n is a prefix of a known word (False for nodes created during search).
    word_index[n]: index into ``words`` when n spells a known word exactly, else -1.
    depth[n]: labels in the partial word. parent[n] / label[n]: the edge into n (-1 at the root).
    """

    def __init__(self, vocab_size: int, spellings: Iterable[Sequence[int]] = (),
                 words: Sequence[str] = ()):
        """spellings[i]: label ids spelling words[i] (the word in the LM's own casing)."""
        self.vocab_size = int(vocab_size)
        self.words: list[str] = list(words)
        self.has_lexicon = False
        # Build with Python dicts (one pass over the lexicon), then move into dense arrays.
        edges: dict[tuple[int, int], int] = {}
        parents, labels = [-1], [-1]
        terminal: dict[int, int] = {}
        for index, spelling in enumerate(spellings):
            node = 0
            for label in spelling:
                key = (node, int(label))
                child = edges.get(key)
                if child is None:
                    child = len(parents)
                    edges[key] = child
                    parents.append(node)
                    labels.append(int(label))
                node = child
            if node:
                self.has_lexicon = True
                terminal.setdefault(node, index)
        count = len(parents)
        capacity = max(_INITIAL_CAPACITY, 2 * count)
        self.size = count
        self.static_size = count  # nodes of known words; later ones are made during search
        self.child = np.full((capacity, self.vocab_size), -1, np.int32)
        self.parent = np.full(capacity, -1, np.int64)
        self.label = np.full(capacity, -1, np.int64)
        self.depth = np.zeros(capacity, np.int64)
        self.in_lexicon = np.zeros(capacity, bool)
        self.word_index = np.full(capacity, -1, np.int64)
        self.parent[:count] = parents
        self.label[:count] = labels
        self.in_lexicon[:count] = True
        if edges:
            keys = np.array(list(edges.keys()), np.int64)
            kids = np.array(list(edges.values()), np.int64)
            self.child[keys[:, 0], keys[:, 1]] = kids
            # Parents always precede children in creation order, so one pass fills depths.
            for node in range(1, count):
                self.depth[node] = self.depth[parents[node]] + 1
        if terminal:
            nodes = np.fromiter(terminal.keys(), np.int64)
            self.word_index[nodes] = np.fromiter(terminal.values(), np.int64)

    # ----------------------------------------------------------------------------- lookups
    def children(self, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n,) child node ids of (nodes[i], labels[i]); creates nodes for unseen partial words."""
        kids = self.child[nodes, labels].astype(np.int64)
        missing = kids < 0
        if missing.any():
            keys = nodes[missing] * self.vocab_size + labels[missing]
            unique, inverse = np.unique(keys, return_inverse=True)
            new_ids = self._add(unique // self.vocab_size, unique % self.vocab_size)
            kids[missing] = new_ids[inverse]
        return kids

    def _add(self, parents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        start, count = self.size, len(parents)
        if start + count > len(self.parent):
            self._grow(start + count)
        ids = np.arange(start, start + count, dtype=np.int64)
        self.child[parents, labels] = ids
        self.parent[ids] = parents
        self.label[ids] = labels
        self.depth[ids] = self.depth[parents] + 1
        self.size = start + count
        return ids

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self.parent))

        def grown(arr: np.ndarray, fill: object) -> np.ndarray:
            out = np.full((capacity, *arr.shape[1:]), fill, arr.dtype)
            out[: len(arr)] = arr
            return out

        self.child = grown(self.child, -1)
        self.parent = grown(self.parent, -1)
        self.label = grown(self.label, -1)
        self.depth = grown(self.depth, 0)
        self.in_lexicon = grown(self.in_lexicon, False)
        self.word_index = grown(self.word_index, -1)

    def forget_search_nodes(self) -> None:
        """Drop the nodes made during search (keeps memory bounded across many batches)."""
        made = slice(self.static_size, self.size)
        parents, labels = self.parent[made], self.label[made]
        self.child[parents, labels] = -1
        self.child[made] = -1
        self.parent[made], self.label[made], self.depth[made] = -1, -1, 0
        self.size = self.static_size

    def spelling(self, node: int) -> list[int]:
        """Label ids of the partial word at ``node``, first label first."""
        out = []
        while node > 0:
            out.append(int(self.label[node]))
            node = int(self.parent[node])
        return out[::-1]

    def find(self, spelling: Sequence[int]) -> int:
        """Node id spelling exactly ``spelling``, or -1 when it does not exist (yet)."""
        node = 0
        for label in spelling:
            node = int(self.child[node, int(label)])
            if node < 0:
                return -1
        return node


def spell(word: str, label_to_id: dict[str, int], case: str) -> list[int] | None:
    """Label ids spelling ``word`` with single-character labels in the acoustic ``case``.

    case: the vocabulary's letter casing ('upper', 'lower', ...); the word is recased to it first.
    None when a character has no label (the word cannot be emitted by the acoustic model).
    """
    if case == "upper":
        word = word.upper()
    elif case == "lower":
        word = word.lower()
    ids = [label_to_id.get(ch, -1) for ch in word]
    return None if not ids or min(ids) < 0 else ids
