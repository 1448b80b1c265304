"""Words in the beam search: which extensions a lexicon allows, homophone forks, and the word
scores of extensions (decoders.lm_fusion.WordScorer), in the search's array namespace.

Token sets (core.vocabulary): with a delimiter, a word ends at the delimiter; with word pieces, a
word ends where the next word-start piece (``▁...``) begins. Words of a pronunciation lexicon
(phonemes) are not their tokens' text: a prefix node that ends a word records which word (a
pronunciation can be several words, homophones: the extension forks into one beam per word, told
apart in merging by its homophone "choice"), and the final texts are the words'. Hard lexicon mode
extends each beam inside a word by all the lexicon's continuations whatever their frame
probability (as flashlight's lexicon decoder does), and never drops a beam's blank/repeat path to
token pruning, so an out-of-lexicon stretch of speech becomes the nearest known words instead of
killing every beam.
"""
from __future__ import annotations

from typing import Any

from ctclab.core.arrays import Arrays
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.decoders.search_state import CHOICE, CTX, LAST, LM, PART, PNB, WNODE, WORD

NEG_INF = float("-inf")


class SearchWords:
    """What words do to a batch search: built once per batch over the decoder's scorer."""

    def __init__(self, scorer: WordScorer, vocab: Vocabulary, xp: Arrays, beam_prune_logp: float):
        self.scorer, self.vocab, self.xp = scorer, vocab, xp
        self.delim = vocab.delimiter
        # word pieces: a word-start piece ends the word before it (no delimiter token)
        self.starts = xp.asarray(vocab.starts_word) if vocab.word_start is not None else None
        # words from a pronunciation lexicon: track word ids (texts are words, not labels)
        self.words_out = not scorer.text_from_tokens
        self.forks = self.words_out and scorer.homophones > 1 and self.delim is not None
        self.hard = scorer.hard
        if self.hard:
            start, clabel, _ = scorer.trie.static_children()
            root_ok = xp.zeros(vocab.size, xp.bool_)   # labels that start some known word
            root_ok[clabel[start[0]:start[1]]] = True
            self.root_ok = root_ok
            self.word_end = scorer.trie.word_count > 0    # known-word nodes that end a word
            # an extension gains at most max_word_gain over its beam's score
            self.hard_floor = beam_prune_logp - scorer.max_word_gain

    # ----------------------------------------------------------------------------- candidates
    def hard_candidates(self, src: Any, tok: Any, lp: Any, wnode: Any, xoff: Any, floor: Any,
                        raw: Any) -> tuple[Any, Any, Any]:
        """Hard lexicon: the extensions a beam may make.

        The frame's usable labels that the lexicon allows (a child of the beam's node, the
        delimiter where its partial word is a word; word pieces: a word-start piece where the
        word ends). A beam that none of them continues, inside an out-of-lexicon stretch of
        speech, is not left to die: it extends by every lexicon child of its node (the root's:
        every label that starts a word), and by the delimiter where its partial word is a word,
        whatever their frame probability (as flashlight's lexicon decoder does for all beams).
        src, tok, lp: the usable (beam, label) candidates and their ln probs; wnode: (n,) the
        beams' word nodes; xoff: (n,) their frame's offset in ``raw`` (unpruned ln probs);
        floor: (n,) per beam, the ln prob below which its extension cannot come within
        beam_prune_logp of the utterance's best beam (pruned anyway). Returns the new triple."""
        xp, trie = self.xp, self.scorer.trie
        start, clabel, _ = trie.static_children()
        wsrc = xp.take(wnode, src)
        cols = tok if trie.columns is None else xp.take(trie.columns, tok)
        kid = trie.children_table.lookup(wsrc, cols)
        allowed = (kid > 0) & (kid < trie.static_size)   # 0: the delimiter's reset
        if self.starts is not None:
            begins = xp.take(self.starts, tok)
            allowed = xp.where(begins, ((wsrc == 0) | xp.take(self.word_end, wsrc))
                               & xp.take(self.root_ok, tok), allowed & (wsrc > 0))
        elif self.delim is not None:
            allowed |= (tok == self.delim) & xp.take(self.word_end, wsrc) & (wsrc > 0)
        n = len(wnode)
        stuck = xp.bincount(src[allowed], minlength=n) == 0
        if self.starts is not None:
            stuck &= wnode > 0
        cnt = xp.where(stuck, xp.take(start, wnode + 1) - xp.take(start, wnode), 0)
        m2 = int(cnt.sum())
        src2 = xp.repeat_range(cnt)
        idx = xp.repeat(xp.take(start, wnode) - (xp.cumsum(cnt) - cnt), cnt) + xp.arange(m2)
        parts_src, parts_tok = [src2], [xp.take(clabel, idx)]
        if self.delim is not None:
            ends = xp.flatnonzero(stuck & xp.take(self.word_end, wnode) & (wnode > 0))
            parts_src.append(ends)
            parts_tok.append(xp.full(len(ends), self.delim, xp.int64))
        src_f = xp.concat(parts_src)
        tok_f = xp.concat(parts_tok)
        lp_f = xp.take(raw, xp.take(xoff, src_f) + tok_f)
        ok = xp.flatnonzero(lp_f >= xp.take(floor, src_f))
        return (xp.concat((src[allowed], xp.take(src_f, ok))),
                xp.concat((tok[allowed], xp.take(tok_f, ok))),
                xp.concat((lp[allowed], xp.take(lp_f, ok))))

    def fork_homophones(self, src: Any, tok: Any, lp: Any, wnode: Any
                        ) -> tuple[Any, Any, Any, Any]:
        """One candidate per word of a delimiter candidate's pronunciation (homophones), with its
        choice 0..k-1; other candidates get choice 0."""
        xp = self.xp
        wsrc = xp.take(wnode, src)
        cnt = xp.where((tok == self.delim) & (wsrc > 0), self.scorer.word_counts(wsrc), 1)
        if not xp.item((cnt > 1).any()):
            return src, tok, lp, xp.zeros(len(src), xp.int64)
        rep = xp.repeat_range(cnt)
        choice = xp.arange(len(rep)) - xp.repeat(xp.cumsum(cnt) - cnt, cnt)
        return xp.take(src, rep), xp.take(tok, rep), xp.take(lp, rep), choice

    # ----------------------------------------------------------------------------- scoring
    def score(self, f: Any, i: Any) -> None:
        """Word-trie moves of the extensions f (4, e), i (rows, e) (in place); finished words
        scored at delimiters (or, for word pieces, where the next word starts)."""
        scorer, xp = self.scorer, self.xp
        if self.starts is not None:
            self._score_pieces(f, i)
            return
        if self.delim is not None and scorer.trie.reset is None:  # delimiter in a shared column
            self._score_split(f, i)
            return
        words = xp.flatnonzero(i[LAST] == self.delim) if self.delim is not None else None
        if words is not None and len(words):
            wnode = xp.take(i[WNODE], words)
        # one lookup moves every extension: a delimiter's child is the root (no word, no score)
        nodes = scorer.trie.children(i[WNODE], i[LAST])
        i[WNODE] = nodes
        f[PART] = scorer.partial_scores(nodes)
        if scorer.hard:
            f[PNB][~scorer.allowed(nodes)] = NEG_INF
        if words is not None and len(words):
            self._finish_words(f, i, words, wnode)

    def _score_split(self, f: Any, i: Any) -> None:
        """score() when the delimiter has no column of its own: letters and words apart."""
        scorer, xp = self.scorer, self.xp
        is_delim = i[LAST] == self.delim
        words = xp.flatnonzero(is_delim)
        letters = xp.flatnonzero(~is_delim)
        if len(letters):
            nodes = scorer.trie.children(xp.take(i[WNODE], letters), xp.take(i[LAST], letters))
            i[WNODE][letters] = nodes
            f[PART][letters] = scorer.partial_scores(nodes)
            if scorer.hard:
                f[PNB][letters[~scorer.allowed(nodes)]] = NEG_INF
        if len(words):
            wnode = xp.take(i[WNODE], words)
            f[PART][words] = 0.0
            i[WNODE][words] = 0
            self._finish_words(f, i, words, wnode)

    def _finish_words(self, f: Any, i: Any, words: Any, wnode: Any) -> None:
        """Score the words ``wnode`` that extensions ``words`` finished (their trie moves done)."""
        scorer, xp = self.scorer, self.xp
        choices = xp.take(i[CHOICE], words) if self.words_out else None
        delta, ctx = scorer.complete(xp.take(i[CTX], words), wnode, choices)
        # (rows indexed as f[LM][words]: 1-D fancy indexing on the row's view costs a third
        # of numpy's mixed f[LM, words]; the same holds for torch tensors)
        f[LM][words] += delta
        i[CTX][words] = ctx
        if choices is not None:
            i[WORD][words] = scorer.word_ids(wnode, choices)

    def _score_pieces(self, f: Any, i: Any) -> None:
        """Word pieces: a word-start piece finishes the beam's word (scored) and starts a new one."""
        scorer, xp = self.scorer, self.xp
        assert self.starts is not None
        begins = xp.take(self.starts, i[LAST])
        done = xp.flatnonzero(begins & (i[WNODE] > 0))
        if len(done):
            delta, ctx = scorer.complete(xp.take(i[CTX], done), xp.take(i[WNODE], done))
            f[LM][done] += delta
            i[CTX][done] = ctx
        nodes = scorer.trie.children(xp.where(begins, 0, i[WNODE]), i[LAST])
        i[WNODE] = nodes
        f[PART] = scorer.partial_scores(nodes)
        if scorer.hard:
            f[PNB][~scorer.allowed(nodes)] = NEG_INF

    # ----------------------------------------------------------------------------- the end
    def best_homophone(self, ctx: Any, nodes: Any) -> tuple[Any, Any, Any]:
        """The unfinished words at the end: (score, LM context, word id) of the best of each
        node's homophones (word score plus </s> after it)."""
        sc, xp = self.scorer, self.xp
        counts = sc.word_counts(nodes)
        best = xp.full(len(nodes), NEG_INF, xp.float64)
        delta = xp.zeros(len(nodes), xp.float64)
        new_ctx = xp.copy(ctx)
        choice = xp.zeros(len(nodes), xp.int64)
        for j in range(int(counts.max()) if len(nodes) else 1):
            at = xp.flatnonzero(counts > j)
            d, c = sc.complete(xp.take(ctx, at), xp.take(nodes, at),
                               xp.full(len(at), j, xp.int64))
            total = d + sc.end(c)
            better = total > xp.take(best, at)
            if j == 0:
                better[:] = True
            up = at[better]
            best[up], delta[up], new_ctx[up], choice[up] = total[better], d[better], \
                c[better], j
        return delta, new_ctx, sc.word_ids(nodes, choice)
