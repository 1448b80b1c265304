"""The array engine of the ``beam`` decoder: CTC prefix beam search over a batch of utterances.

All live beams of all utterances of a batch sit in two packed arrays (one column per beam). Each
step advances every utterance by one of its *active* frames: frames where token pruning leaves no
usable non-blank label (or blank is near-certain) are folded in closed form between steps. So a
step costs a fixed number of numpy calls whatever the batch size; no Python loop runs over beams or
labels. Per step:

1. stays: every beam keeps its prefix: p_b' = p(prefix) * p(blank); p_nb' = p_nb * p(last label)
   (the last label continues; a label repeated needs a blank in between).
2. extensions: every (beam, candidate label) pair of the beam's utterance, candidates being the
   labels that survived the per-frame token pruning (precomputed for all frames at once).
3. merging: an extension A + c that equals a live prefix B (B's parent is A and B ends in c) is
   added to B. Live beams carry the column of their parent prefix, so this is one table lookup.
4. word scoring at word boundaries (decoders.lm_fusion; a Python loop over the words finished in
   this step, answered from a cache), then pruning per utterance: score threshold relative to the
   utterance's best beam, then the beam width.

Scores are natural logs in float64. The word delimiter is folded: a delimiter after a delimiter
(or at the start) keeps the same prefix, and at the end a trailing delimiter is merged away, so
beams are distinct texts. Timestamps: each prefix node records the frame its label started in and
where its parent's label ended.

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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.confidence import word_frame_confidence
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.timestamps import WordSpan, make_words, word_spans

NEG_INF = -math.inf


# Rows of the packed beam state. Floats (ln scores):
PB, PNB, LM, PART = range(4)
# pb: ln P(prefix, path ends in blank); pnb: ln P(prefix, path ends in its last label);
# lm: word scores so far (LM, bonuses, penalties of finished words); part: unfinished word's score.
# Integers:
UTT, LAST, NODE, END, WNODE, CTX, PARENT, CHOICE, WORD = range(9)
# utt: utterance in the batch; last: last label (V = none: empty prefix without a delimiter label);
# node: prefix node id (-1 = empty); end: active-frame index where the last label was last emitted;
# wnode: trie node of the unfinished word (0 = none); ctx: LM context id; parent: row of the live
# beam holding this prefix minus its last label, or -1. Only when words come from a pronunciation
# lexicon: choice: homophone index of the word the last label (a delimiter) finished; word: its
# word id (-1 unknown / none).
BASE_INT_ROWS, WORD_INT_ROWS = 7, 9


@dataclass
class _Beams:
    """Packed struct of arrays: f (4, N) float64 and i (7 or 9, N) int64, one column per beam."""

    f: np.ndarray
    i: np.ndarray

    def take(self, idx: np.ndarray) -> _Beams:
        return _Beams(self.f[:, idx], self.i[:, idx])


# Multiplier of the 64-bit rolling hash of a prefix's labels (odd, so no label is lost mod 2^64).
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


class _Nodes:
    """Growable prefix-node table: parent node, label, active index of its first frame, the
    active index where the parent's last label was last emitted (that label's end), and a 64-bit
    hash of the prefix's labels (the empty prefix hashes to 0). With words from a pronunciation
    lexicon three more rows: the word id a delimiter node finished (-1: unknown or none), a hash
    of the finished words (the text), and a hash of the labels since the last delimiter.

    One text can own several nodes (a prefix pruned and spelled again later while a child of
    the old node lives on); the hash tells such duplicates apart from different texts."""

    def __init__(self, words: bool = False, delimiter: int = -1) -> None:
        self.size = 0
        self.rows = 8 if words else 5
        self.delimiter = delimiter
        # The last column is never filled: indexing with node -1 reads it, so the empty prefix
        # hashes to 0 without a mask.
        self.data = np.zeros((self.rows, 4096), np.int64)

    def add(self, parent: np.ndarray, label: np.ndarray, start: np.ndarray, prev_end: np.ndarray,
            word: np.ndarray | None = None) -> np.ndarray:
        n = len(parent)
        if self.size + n >= self.data.shape[1]:
            grown = np.zeros((self.rows, max(2 * self.data.shape[1], self.size + n + 1)),
                             np.int64)
            grown[:, : self.size] = self.data[:, : self.size]
            self.data = grown
        data, end = self.data, self.size + n
        data[0, self.size:end] = parent
        data[1, self.size:end] = label
        data[2, self.size:end] = start
        data[3, self.size:end] = prev_end
        h = data[4, self.size:end].view(np.uint64)
        np.multiply(data[4].take(parent).view(np.uint64), _HASH_MUL, out=h)
        h += label.view(np.uint64)
        h += np.uint64(1)
        if self.rows > 5:
            assert word is not None
            at_delim = label == self.delimiter
            data[5, self.size:end] = np.where(at_delim, word, -1)
            part = data[7].take(parent).view(np.uint64) * _HASH_MUL + label.view(np.uint64) \
                + np.uint64(1)
            data[7, self.size:end] = np.where(at_delim, 0, part.view(np.int64))
            finished = _word_hash(data[6].take(parent), word, data[7].take(parent))
            data[6, self.size:end] = np.where(at_delim, finished, data[6].take(parent))
        ids = np.arange(self.size, end)
        self.size = end
        return ids

    def text_hash(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) int64 hash of each node's labels; 0 for the empty prefix (node -1)."""
        return self.data[4].take(nodes)


# Multiplier of the word-sequence hash (words from a pronunciation lexicon); another odd constant.
_WORD_MUL = np.uint64(0xC2B2AE3D27D4EB4F)
# Marks the hash of an unknown word's labels so it never equals a word id.
_UNKNOWN_SALT = np.uint64(0x165667B19E3779F9)


def _word_hash(before: np.ndarray, word: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Hash of the word sequence ``before`` + one word: its id, or (unknown) its labels' hash."""
    unit = np.where(word >= 0, word + 1, (part.view(np.uint64) ^ _UNKNOWN_SALT).view(np.int64))
    return (before.view(np.uint64) * _WORD_MUL + unit.view(np.uint64)).view(np.int64)


class BatchSearch:
    """One search over a batch of validated (T_i, V) float32 log-prob arrays, with the ``beam``
    decoder's (validated) options: beam_width, token_min_logp, token_top_k, beam_prune_logp,
    blank_skip_threshold and nbest are read here; the word options went into ``scorer``."""

    def __init__(self, emissions: Sequence[np.ndarray], vocab: Vocabulary,
                 options: BeamOptions, scorer: WordScorer | None, frame_shift_s: float):
        self.vocab, self.options, self.frame_shift_s = vocab, options, frame_shift_s
        self.scorer = scorer if scorer is not None and scorer.active else None
        self.lengths = np.array([len(e) for e in emissions], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.x = np.concatenate(emissions) if len(emissions) else np.zeros((0, vocab.size),
                                                                           np.float32)
        self.delim = vocab.delimiter
        self.width = vocab.size + 1   # labels + a sentinel column "no last label" (always -inf)
        sc = self.scorer
        # word pieces: a word-start piece ends the word before it (no delimiter token)
        self.starts = vocab.starts_word if vocab.word_start is not None else None
        # words from a pronunciation lexicon: track word ids (texts are words, not labels)
        self.words_out = sc is not None and not sc.text_from_tokens
        self.forks = self.words_out and sc is not None and sc.homophones > 1 \
            and self.delim is not None
        self.hard = sc is not None and sc.hard
        self.n_int = WORD_INT_ROWS if self.words_out else BASE_INT_ROWS
        # merge keys: labels, the sentinel, and one column per homophone choice beyond the first
        self.merge_width = self.width + (sc.homophones - 1 if self.forks and sc else 0)
        self.nodes = _Nodes(self.words_out, -1 if self.delim is None else self.delim)
        if self.hard and sc is not None:
            start, clabel, _ = sc.trie.static_children()
            self._root_ok = np.zeros(vocab.size, bool)   # labels that start some known word
            self._root_ok[clabel[start[0]:start[1]]] = True
            self._word_end = sc.trie.word_count > 0      # known-word nodes that end a word
            # an extension gains at most max_word_gain over its beam's score
            self._hard_floor = options.beam_prune_logp - sc.max_word_gain
        self._merge_buf = np.full(1024, -1, np.int64)
        self._minus_one = np.full(1024, -1, np.int64)

    # ----------------------------------------------------------------------------- schedule
    def _schedule(self) -> None:
        """Active frames per step, blank mass of skipped gaps, and token candidates per step."""
        vocab, st = self.vocab, self.options
        n_utt = len(self.lengths)
        blank = self.x[:, vocab.blank].astype(np.float64)
        # Blank mass of frame ranges [a, b) from prefix sums; a -inf blank (p = 0, valid input)
        # would make the differences NaN, so such frames are counted apart and give -inf.
        impossible = np.isneginf(blank)
        cum = np.concatenate([[0.0], np.cumsum(np.where(impossible, 0.0, blank))])
        cum_impossible = np.concatenate([[0], np.cumsum(impossible)])

        def blank_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(cum_impossible[b] > cum_impossible[a], NEG_INF, cum[b] - cum[a])

        utt_of_row = np.repeat(np.arange(n_utt), self.lengths)
        # Token pruning: in each frame a label is usable when its ln prob is >= token_min_logp or it
        # is the frame's best label (unused specials never are). A frame where no non-blank label
        # is usable is exactly a blank frame for the search: every prefix just accumulates the
        # blank mass, folded in closed form (no search step). blank_skip_threshold additionally
        # folds frames where blank is near-certain (see decoders/constants.py).
        emit = np.zeros(vocab.size, bool)
        emit[vocab.emitting_ids] = True
        usable_cols = emit.copy()
        usable_cols[vocab.blank] = True
        x64 = self.x.astype(np.float64)
        best_usable = np.where(usable_cols, x64, NEG_INF).max(axis=1, initial=NEG_INF)
        floor_all = np.minimum(st.token_min_logp, best_usable)
        active = (x64[:, emit] >= floor_all[:, None]).any(axis=1)
        if st.blank_skip_threshold is not None:
            active &= blank < math.log(st.blank_skip_threshold)
        rows = np.flatnonzero(active)
        self.act_rows = rows
        utt = utt_of_row[rows]
        n_act = np.bincount(utt, minlength=n_utt)
        first = np.cumsum(n_act) - n_act
        step = np.arange(len(rows)) - first[utt]
        prev = np.where(step > 0, np.roll(rows, 1), self.offsets[utt] - 1)
        self.n_act = n_act
        self.n_steps = int(n_act.max(initial=0))
        self.finishing = np.zeros(self.n_steps + 1, bool)
        self.finishing[n_act[n_act > 0] - 1] = True
        shape = (self.n_steps, n_utt)
        self.arow = np.zeros(shape, np.int64)
        self.gap = np.zeros(shape, np.float64)
        self.has_gap = np.zeros(shape, bool)
        self.arow[step, utt] = np.arange(len(rows))
        self.gap[step, utt] = blank_mass(prev + 1, rows)
        self.has_gap[step, utt] = rows > prev + 1
        # np.any, not .any(): numpy 2's stubs type the method's result as bool | array (mypy)
        self.any_gap = np.any(self.has_gap, axis=1)
        last_row = np.where(n_act > 0, rows[np.maximum(first + n_act - 1, 0)] if len(rows) else 0,
                            self.offsets - 1)
        self.trail = blank_mass(last_row + 1, self.offsets + self.lengths)
        sub = x64[rows]
        # The token pruning applies to blank and to the last label continuing too: a path through
        # a label that improbable is dropped whatever the label (as pyctcdecode does). Without it a
        # beam can "step over" a near-certain word delimiter through a blank of p < e^-5 whenever
        # the LM dislikes the word just finished (e.g. an OOV scored at <unk>).
        floor = floor_all[rows]
        usable = (sub >= floor[:, None]) & usable_cols
        floored = np.full((len(rows), self.width), NEG_INF)
        if self.hard:
            # Hard lexicon: a beam inside an out-of-lexicon stretch must be able to wait (blank)
            # or hold its label however improbable, else every beam dies there.
            floored[:, : vocab.size] = np.where(usable_cols, sub, NEG_INF)
            self.raw = floored.ravel()
        else:
            floored[:, : vocab.size] = np.where(usable, sub, NEG_INF)
        self.xf = floored.ravel()
        self.blank_lp = np.zeros(shape, np.float64)
        self.blank_lp[step, utt] = floored[:, vocab.blank]
        # Extension candidates: usable labels, at most token_top_k of them per frame.
        mask = usable & emit
        if st.token_top_k is not None and st.token_top_k < vocab.size and len(rows):
            kth = -np.partition(-sub, st.token_top_k - 1, axis=1)[:, st.token_top_k - 1]
            mask &= sub >= kth[:, None]
        order = np.lexsort((utt, step))
        r, tok = np.nonzero(mask[order])
        self.cand_tok = tok.astype(np.int64)
        self.cand_lp = sub[order[r], tok]
        counts = mask.sum(axis=1)[order]
        self.cand_start = np.zeros(shape, np.int64)
        self.cand_count = np.zeros(shape, np.int64)
        self.cand_start[step[order], utt[order]] = np.cumsum(counts) - counts
        self.cand_count[step[order], utt[order]] = counts
        # The per-(step, utterance) tables a step gathers, fused so that one take serves them all:
        # rows arow, cand_start, cand_count, has_gap (ints) and gap, blank_lp (floats).
        self.tab_i = np.stack([self.arow, self.cand_start, self.cand_count, self.has_gap], axis=1)
        self.tab_f = np.stack([self.gap, self.blank_lp], axis=1)
        self.neg_utt = np.full(n_utt, NEG_INF)

    # ----------------------------------------------------------------------------- search
    def run(self) -> list[list[Hypothesis]]:
        """Search every utterance; per utterance its hypotheses, best first (>= 1)."""
        self._schedule()
        n_utt = len(self.lengths)
        start_ctx = self.scorer.start_context if self.scorer is not None else 0
        root_last = self.delim if self.delim is not None else self.vocab.size

        def roots(utts: np.ndarray) -> _Beams:
            n = len(utts)
            f = np.zeros((4, n))
            f[PNB] = NEG_INF
            i = np.zeros((self.n_int, n), np.int64)
            i[UTT], i[LAST], i[NODE], i[CTX], i[PARENT] = utts, root_last, -1, start_ctx, -1
            if self.words_out:
                i[WORD] = -1
            return _Beams(f, i)

        finished: list[_Beams] = [roots(np.flatnonzero(self.n_act == 0))]
        beams = roots(np.flatnonzero(self.n_act > 0))
        finish_step = self.n_act - 1
        self._arange = np.arange(1024)
        for s in range(self.n_steps):
            beams = self._step(s, beams, n_utt)
            if self.finishing[s]:
                done = finish_step[beams.i[UTT]] == s
                finished.append(beams.take(done))
                keep = ~done
                newpos = np.cumsum(keep) - 1
                beams = beams.take(keep)
                par = beams.i[PARENT]
                beams.i[PARENT] = np.where(par >= 0, newpos[par], -1)
        return self._finish(_Beams(np.concatenate([b.f for b in finished], axis=1),
                                   np.concatenate([b.i for b in finished], axis=1)), n_utt)

    def _step(self, s: int, b: _Beams, n_utt: int) -> _Beams:
        # Few, fused numpy calls: arrays hold ~100s of beams, so per-call overhead dominates.
        st, w, delim = self.options, self.width, self.delim
        f, i = b.f, b.i
        u, last, n = i[UTT], i[LAST], f.shape[1]
        ti = self.tab_i[s].take(u, axis=1)   # (4, n) arow, cand_start, cand_count, has_gap
        tf = self.tab_f[s].take(u, axis=1)   # (2, n) gap, blank_lp
        pb, pnb = f[PB], f[PNB]
        tot = np.logaddexp(pb, pnb)
        if self.any_gap[s]:  # blank-certain frames skipped since the last step: all mass -> blank
            tot += tf[0]
            has_gap = ti[3] != 0
            pb = np.where(has_gap, tot, pb)
            pnb = np.where(has_gap, NEG_INF, pnb)
        ar = ti[0]
        stay_pb = tot + tf[1]
        rep = self.xf[ar * w + last]
        if delim is not None:   # a delimiter after a delimiter keeps the prefix
            last_delim = last == delim
            stay_pnb = np.where(last_delim, tot, pnb) + rep
            # ... and is no extension: its "repeat" base is -inf
            pb_rep = np.where(last_delim, NEG_INF, pb)
        else:
            stay_pnb = pnb + rep
            pb_rep = pb
        k = ti[2]
        m = int(k.sum())
        if len(self._arange) < max(n, m) + 1:
            self._arange = np.arange(2 * max(n, m) + 1)
        rng = self._arange
        e = 0
        choice = None
        if m or self.hard:
            src = rng[:n].repeat(k)
            ci = (ti[1] - (k.cumsum() - k)).repeat(k) + rng[:m]
            tok = self.cand_tok[ci]
            lp = self.cand_lp[ci]
            if self.hard:
                floor = self._hard_floor - tot - f[LM]
                if st.beam_prune_logp > NEG_INF:  # relative to the best stay of the utterance
                    pre = np.logaddexp(stay_pb, stay_pnb) + f[LM] + f[PART]
                    best_pre = self.neg_utt.copy()
                    np.maximum.at(best_pre, u, pre)
                    floor += best_pre.take(u)
                src, tok, lp = self._hard_candidates(src, tok, lp, i[WNODE], ar, floor)
            if self.forks:
                src, tok, lp, choice = self._fork_homophones(src, tok, lp, i[WNODE])
            m = len(src)
            if len(self._arange) < m + 1:
                self._arange = np.arange(2 * m + 1)
                rng = self._arange
        if m:
            # base: tot of the source beam, or its pb when the label repeats its last label
            pick = np.concatenate((tot, pb_rep))
            rep_src = (tok == last[src]) * n
            rep_src += src
            base = pick[rep_src] + lp
            # Merge into live beams: A + c is the live B whose parent is A and whose last is c
            # (with homophone forks: and whose choice is the same). Keys are shifted by one row
            # so that parentless beams (-1) land in a row never asked.
            wm = self.merge_width
            if len(self._merge_buf) < (n + 1) * wm:
                self._merge_buf = np.full(2 * (n + 1) * wm, -1, np.int64)
            mb = self._merge_buf
            pkeys = i[PARENT] * wm
            q = src * wm
            if choice is None:
                pkeys += last
                q += tok
            else:  # choice c > 0 of a word is its own column after the sentinel
                pkeys += np.where(i[CHOICE] > 0, self.vocab.size + i[CHOICE], last)
                q += np.where(choice > 0, self.vocab.size + choice, tok)
            pkeys += wm
            mb[pkeys] = rng[:n]
            q += wm
            target = mb[q]
            mb[pkeys] = -1
            merged = (target >= 0).nonzero()[0]
            if len(merged):
                t = target[merged]
                stay_pnb[t] = np.logaddexp(stay_pnb[t], base[merged])
                base[merged] = NEG_INF
        stay_score = np.logaddexp(stay_pb, stay_pnb) + f[LM] + f[PART]
        best = None
        if m:
            keep = base > NEG_INF
            if self.scorer is not None and st.beam_prune_logp > NEG_INF:
                # extensions that cannot reach the threshold: dropped before any word scoring
                best = self.neg_utt.copy()
                np.maximum.at(best, u, stay_score)
                keep &= base + f[LM].take(src) >= (best - self.scorer.max_word_gain + st.beam_prune_logp)[
                    u.take(src)]
            sel = keep.nonzero()[0]
            e = len(sel)
            if e:
                src, tok, base = src.take(sel), tok.take(sel), base.take(sel)
                if choice is not None:
                    choice = choice.take(sel)
        fp = np.empty((4, n + e))
        ip = np.empty((self.n_int, n + e), np.int64)
        fp[PB, :n], fp[PNB, :n], fp[LM:, :n] = stay_pb, stay_pnb, f[LM:]
        ip[:, :n] = i
        np.copyto(ip[END, :n], ar, where=stay_pnb > stay_pb)
        if e:
            fp[PB, n:], fp[PNB, n:], fp[LM:, n:] = NEG_INF, base, f[LM:].take(src, axis=1)
            ip[:, n:] = i.take(src, axis=1)
            ip[LAST, n:], ip[END, n:], ip[PARENT, n:] = tok, ar.take(src), src
            if self.words_out:
                ip[CHOICE, n:] = 0 if choice is None else choice
                ip[WORD, n:] = -1
            if self.scorer is not None:
                self._score_words(fp[:, n:], ip[:, n:])
        return self._prune(_Beams(fp, ip), n, n_utt, i[END], stay_score, best)

    def _hard_candidates(self, src: np.ndarray, tok: np.ndarray, lp: np.ndarray,
                         wnode: np.ndarray, ar: np.ndarray, floor: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hard lexicon: the extensions a beam may make.

        The frame's usable labels that the lexicon allows (a child of the beam's node, the
        delimiter where its partial word is a word; word pieces: a word-start piece where the
        word ends). A beam that none of them continues, inside an out-of-lexicon stretch of
        speech, is not left to die: it extends by every lexicon child of its node (the root's:
        every label that starts a word), and by the delimiter where its partial word is a word,
        whatever their frame probability (as flashlight's lexicon decoder does for all beams).
        src, tok, lp: the usable (beam, label) candidates and their ln probs; floor: (n,) per
        beam, the ln prob below which its extension cannot come within beam_prune_logp of the
        utterance's best beam (pruned anyway). Returns the new triple."""
        sc = self.scorer
        assert sc is not None
        trie = sc.trie
        start, clabel, _ = trie.static_children()
        root_ok, word_end = self._root_ok, self._word_end
        wsrc = wnode.take(src)
        cols = tok if trie.columns is None else trie.columns.take(tok)
        kid = trie.child[wsrc, cols]
        allowed = (kid >= 0) & (kid < trie.static_size)
        if self.starts is not None:
            begins = self.starts.take(tok)
            allowed = np.where(begins, ((wsrc == 0) | word_end.take(wsrc)) & root_ok.take(tok),
                               allowed & (wsrc > 0))
        elif self.delim is not None:
            allowed |= (tok == self.delim) & word_end.take(wsrc) & (wsrc > 0)
        n = len(wnode)
        stuck = np.bincount(src[allowed], minlength=n) == 0
        if self.starts is not None:
            stuck &= wnode > 0
        cnt = np.where(stuck, start.take(wnode + 1) - start.take(wnode), 0)
        m2 = int(cnt.sum())
        rng = np.arange(max(m2, n))
        src2 = rng[:n].repeat(cnt)
        idx = start.take(wnode).repeat(cnt) + rng[:m2] - (cnt.cumsum() - cnt).repeat(cnt)
        parts_src, parts_tok = [src2], [clabel.take(idx)]
        if self.delim is not None:
            ends = (stuck & word_end.take(wnode) & (wnode > 0)).nonzero()[0]
            parts_src.append(ends)
            parts_tok.append(np.full(len(ends), self.delim, np.int64))
        src_f = np.concatenate(parts_src)
        tok_f = np.concatenate(parts_tok)
        lp_f = self.raw.take(ar.take(src_f) * self.width + tok_f)
        ok = (lp_f >= floor.take(src_f)).nonzero()[0]
        return (np.concatenate((src[allowed], src_f.take(ok))),
                np.concatenate((tok[allowed], tok_f.take(ok))),
                np.concatenate((lp[allowed], lp_f.take(ok))))

    def _fork_homophones(self, src: np.ndarray, tok: np.ndarray, lp: np.ndarray,
                         wnode: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One candidate per word of a delimiter candidate's pronunciation (homophones), with its
        choice 0..k-1; other candidates get choice 0."""
        sc = self.scorer
        assert sc is not None
        wsrc = wnode.take(src)
        cnt = np.where((tok == self.delim) & (wsrc > 0), sc.word_counts(wsrc), 1)
        if not (cnt > 1).any():
            return src, tok, lp, np.zeros(len(src), np.int64)
        rep = np.arange(len(src)).repeat(cnt)
        choice = np.arange(len(rep)) - (cnt.cumsum() - cnt).repeat(cnt)
        return src.take(rep), tok.take(rep), lp.take(rep), choice

    def _score_words(self, f: np.ndarray, i: np.ndarray) -> None:
        """Word-trie moves of the extensions (in place); finished words scored at delimiters (or,
        for word pieces, where the next word starts)."""
        scorer = self.scorer
        assert scorer is not None  # only called when words are scored
        if self.starts is not None:
            self._score_pieces(f, i)
            return
        letters = words = None   # None: all extensions are letters
        if self.delim is not None:
            is_delim = i[LAST] == self.delim
            words = is_delim.nonzero()[0]
            if len(words):
                letters = (~is_delim).nonzero()[0]
        if letters is None:
            nodes = scorer.trie.children(i[WNODE], i[LAST])
            i[WNODE] = nodes
            f[PART] = scorer.partial_scores(nodes)
            if scorer.hard:
                f[PNB, ~scorer.allowed(nodes)] = NEG_INF
        elif len(letters):
            nodes = scorer.trie.children(i[WNODE].take(letters), i[LAST].take(letters))
            i[WNODE, letters] = nodes
            f[PART, letters] = scorer.partial_scores(nodes)
            if scorer.hard:
                f[PNB, letters[~scorer.allowed(nodes)]] = NEG_INF
        if words is not None and len(words):
            wnode = i[WNODE].take(words)
            choices = i[CHOICE].take(words) if self.words_out else None
            delta, ctx = scorer.complete(i[CTX].take(words), wnode, choices)
            f[LM, words] += delta
            i[CTX, words] = ctx
            f[PART, words] = 0.0
            i[WNODE, words] = 0
            if choices is not None:
                i[WORD, words] = scorer.word_ids(wnode, choices)

    def _score_pieces(self, f: np.ndarray, i: np.ndarray) -> None:
        """Word pieces: a word-start piece finishes the beam's word (scored) and starts a new one."""
        scorer = self.scorer
        assert scorer is not None and self.starts is not None
        begins = self.starts.take(i[LAST])
        done = (begins & (i[WNODE] > 0)).nonzero()[0]
        if len(done):
            delta, ctx = scorer.complete(i[CTX].take(done), i[WNODE].take(done))
            f[LM, done] += delta
            i[CTX, done] = ctx
        nodes = scorer.trie.children(np.where(begins, 0, i[WNODE]), i[LAST])
        i[WNODE] = nodes
        f[PART] = scorer.partial_scores(nodes)
        if scorer.hard:
            f[PNB, ~scorer.allowed(nodes)] = NEG_INF

    def _prune(self, pool: _Beams, n_stays: int, n_utt: int, old_end: np.ndarray,
               stay_score: np.ndarray, stay_best: np.ndarray | None) -> _Beams:
        """Threshold and beam-width pruning of stays + extensions. stay_score: (n_stays,) scores
        of the stays (already computed); stay_best: their best per utterance, or None."""
        st = self.options
        f, i = pool.f, pool.i
        total = f.shape[1]
        if total > n_stays:
            # an extension has pb = -inf, and logaddexp(-inf, x) == x exactly
            score = np.empty(total)
            score[:n_stays] = stay_score
            ext = score[n_stays:]
            np.add(f[PNB, n_stays:], f[LM, n_stays:], out=ext)
            ext += f[PART, n_stays:]
        else:
            score = stay_score
        u = i[UTT]
        if st.beam_prune_logp > NEG_INF:
            if stay_best is not None:
                best = stay_best
                np.maximum.at(best, u[n_stays:], score[n_stays:])
            else:
                best = self.neg_utt.copy()
                np.maximum.at(best, u, score)
            keep = score >= (best + st.beam_prune_logp)[u]
            keep &= score > NEG_INF
        else:
            keep = score > NEG_INF
        sel = keep.nonzero()[0]
        if len(sel) > st.beam_width:
            counts = np.bincount(u.take(sel), minlength=n_utt)
            if counts.max(initial=0) > st.beam_width:
                order = sel[np.lexsort((-score[sel], u[sel]))]
                group_first = np.cumsum(counts) - counts
                rank = np.arange(len(order)) - group_first[u[order]]
                sel = np.sort(order[rank < st.beam_width])
        out = _Beams(f.take(sel, axis=1), i.take(sel, axis=1))
        j = int(sel.searchsorted(n_stays))
        if j < len(sel):  # surviving extensions get prefix nodes
            ie = out.i[:, j:]
            ie[NODE] = self.nodes.add(ie[NODE], ie[LAST], ie[END], old_end.take(ie[PARENT]),
                                      ie[WORD] if self.words_out else None)
        # new position of each pool row; the extra last entry maps parent -1 to -1
        if len(self._minus_one) <= total:
            self._minus_one = np.full(2 * total + 1, -1, np.int64)
        newpos = self._minus_one[: total + 1].copy()
        newpos[sel] = self._arange[: len(sel)] if len(self._arange) >= len(sel) else \
            np.arange(len(sel))
        out.i[PARENT] = newpos.take(out.i[PARENT])
        return out

    # ----------------------------------------------------------------------------- results
    def _finish(self, b: _Beams, n_utt: int) -> list[list[Hypothesis]]:
        f, i = b.f, b.i
        utt, node, last = i[UTT], i[NODE], i[LAST]
        acoustic = np.logaddexp(f[PB], f[PNB]) + self.trail[utt]
        lm = f[LM].copy()
        open_ids = np.full(len(utt), -1, np.int64)   # word id of the unfinished word (words_out)
        if self.scorer is not None:  # the unfinished word is a word now; then </s>
            open_word = np.flatnonzero(i[WNODE] > 0)
            ctx = i[CTX].copy()
            if len(open_word) and self.words_out:
                delta, ctx[open_word], open_ids[open_word] = self._best_homophone(
                    ctx[open_word], i[WNODE, open_word])
                lm[open_word] += delta
            elif len(open_word):
                delta, ctx[open_word] = self.scorer.complete(ctx[open_word], i[WNODE, open_word])
                lm[open_word] += delta
            lm += self.scorer.end(ctx)
        total = acoustic + lm
        bad = ~np.isfinite(total)
        drop_open = np.zeros(len(utt), bool)
        if bad.any():
            # Hard lexicon, and every beam of an utterance ends inside a word that is none: the
            # words before it are the text (the unfinished one is dropped), scored without it.
            valid_utt = np.zeros(n_utt, bool)
            valid_utt[utt[~bad]] = True
            fallback = bad & ~valid_utt[utt] & np.isfinite(acoustic)
            lm[fallback] = f[LM, fallback]
            if self.scorer is not None:
                drop_open = fallback & (i[WNODE] > 0)
                lm[drop_open] += self.scorer.end(i[CTX, drop_open])
            total = acoustic + lm
        ok = np.flatnonzero(np.isfinite(total))
        # Beams with one text are one hypothesis: merge them, by text hash (one text can own
        # several prefix nodes), counting a trailing delimiter as no label.
        if self.words_out:  # the text is the words: hash them, the unfinished one included
            data = self.nodes.data
            text = np.where(i[WNODE] > 0, _word_hash(data[6].take(node), open_ids,
                                                     data[7].take(node)), data[6].take(node))
        elif self.starts is not None:  # word pieces: several labellings read as one text
            text = np.zeros(len(node), np.int64)
            if len(ok):
                read = self.vocab.decode_tokens
                text[ok] = [hash(read(p[0])) for p in self._paths(node[ok], i[END, ok])]
        else:
            canon = node.copy()
            if self.delim is not None:
                trailing = (last == self.delim) & (node >= 0)
                canon[trailing] = self.nodes.data[0, node[trailing]]
            text = self.nodes.text_hash(canon)
        order = ok[np.lexsort((-total[ok], text[ok], utt[ok]))]
        same = (utt[order][1:] == utt[order][:-1]) & (text[order][1:] == text[order][:-1])
        starts = np.flatnonzero(np.r_[True, ~same]) if len(order) else order
        rep = order[starts]
        g_total = np.logaddexp.reduceat(total[order], starts) if len(order) else total[:0]
        g_acoustic = np.logaddexp.reduceat(acoustic[order], starts) if len(order) else total[:0]
        g_utt = utt[rep]
        # Best groups first within each utterance; keep nbest of each.
        ranked = np.lexsort((-g_total, g_utt))
        group_first = np.searchsorted(g_utt[ranked], np.arange(n_utt))
        rank = np.arange(len(ranked)) - group_first[g_utt[ranked]]
        chosen = ranked[rank < max(1, self.options.nbest)]
        per_utt: list[list[Hypothesis]] = [[] for _ in range(n_utt)]
        paths = self._paths(node[rep[chosen]], i[END, rep[chosen]])
        open_of = open_ids[rep[chosen]].tolist()
        dropped = drop_open[rep[chosen]].tolist()
        labellings, spans = [], []
        for (tokens, start_rows, end_rows, word_ids), open_id, drop in zip(
                paths, open_of, dropped, strict=True):
            if drop:  # cut the unfinished word off
                keep = self._last_word_end(tokens)
                tokens, start_rows, end_rows = tokens[:keep], start_rows[:keep], end_rows[:keep]
                word_ids = word_ids[:keep]
            labellings.append(tokens)
            spans.append(self._lexicon_spans(tokens, start_rows, end_rows, word_ids, open_id)
                         if self.words_out else
                         word_spans(tokens, start_rows, end_rows, self.vocab))
        # Frame confidence of every word of every hypothesis in one pass over the batch's rows
        # (a pass per hypothesis cost more than the n-best search itself).
        flat = [s for ws in spans for s in ws]
        conf = word_frame_confidence(self.x, [s.tokens for s in flat],
                                     [(s.start, s.end) for s in flat]).tolist()
        at = 0
        for gi, tokens, ws in zip(chosen.tolist(), labellings, spans, strict=True):
            ut = int(g_utt[gi])
            off = int(self.offsets[ut])
            words = make_words([s._replace(start=s.start - off, end=s.end - off) for s in ws],
                               self.frame_shift_s, conf[at:at + len(ws)])
            at += len(ws)
            score, ac = float(g_total[gi]), float(g_acoustic[gi])
            per_utt[ut].append(Hypothesis(
                text=" ".join(w.word for w in words), score=score, tokens=tuple(tokens),
                words=words, acoustic_score=ac, lm_score=score - ac))
        for ut in range(n_utt):
            if not per_utt[ut]:
                per_utt[ut].append(Hypothesis.empty())
        return per_utt

    def _last_word_end(self, tokens: list[int]) -> int:
        """How many labels precede the unfinished last word: up to its delimiter (or, for word
        pieces, up to its word-start piece)."""
        for k in range(len(tokens) - 1, -1, -1):
            if tokens[k] == self.delim:
                return k + 1
            if self.starts is not None and self.starts[tokens[k]]:
                return k
        return 0

    def _best_homophone(self, ctx: np.ndarray, nodes: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The unfinished words at the end: (score, LM context, word id) of the best of each
        node's homophones (word score plus </s> after it)."""
        sc = self.scorer
        assert sc is not None
        counts = sc.word_counts(nodes)
        best = np.full(len(nodes), NEG_INF)
        delta = np.zeros(len(nodes))
        new_ctx = ctx.copy()
        choice = np.zeros(len(nodes), np.int64)
        for j in range(int(counts.max(initial=1))):
            at = np.flatnonzero(counts > j)
            d, c = sc.complete(ctx[at], nodes[at], np.full(len(at), j, np.int64))
            total = d + sc.end(c)
            better = total > best[at]
            if j == 0:
                better[:] = True
            up = at[better]
            best[up], delta[up], new_ctx[up], choice[up] = total[better], d[better], \
                c[better], j
        return delta, new_ctx, sc.word_ids(nodes, choice)

    def _lexicon_spans(self, tokens: list[int], starts: list[int], ends: list[int],
                       word_ids: list[int], open_id: int) -> list[WordSpan]:
        """Words of a path whose words come from a pronunciation lexicon: each run of labels up
        to a delimiter is the word that delimiter's node recorded (an unknown one: its labels)."""
        sc = self.scorer
        assert sc is not None
        out: list[WordSpan] = []
        group: list[int] = []
        labels = self.vocab.labels

        def flush(word_id: int) -> None:
            if group:
                text = sc.word_text[word_id] if word_id >= 0 else "".join(
                    labels[tokens[k]] for k in group)
                out.append(WordSpan(text, starts[group[0]], ends[group[-1]],
                                    [tokens[k] for k in group]))
                group.clear()

        for k, token in enumerate(tokens):
            if token == self.delim:
                flush(word_ids[k])
            else:
                group.append(k)
        flush(open_id)
        return out

    def _paths(self, nodes: np.ndarray, last_end: np.ndarray
               ) -> list[tuple[list[int], list[int], list[int], list[int]]]:
        """Labels, first rows, rows after the last of each prefix node's labels, and (words from
        a lexicon) the word id each label's node recorded.

        nodes: (n,) prefix node ids; last_end: (n,) active index where each last label ended.
        """
        data = self.nodes.data
        rows = self.act_rows.tolist()
        cur = nodes.copy()
        toks, starts, prev_ends, words = [], [], [], []
        while (cur >= 0).any():
            live = cur >= 0
            safe = np.maximum(cur, 0)
            toks.append(np.where(live, data[1, safe], -1))
            starts.append(data[2, safe])
            prev_ends.append(data[3, safe])
            if self.words_out:
                words.append(data[5, safe])
            cur = np.where(live, data[0, safe], -1)
        out = []
        if not toks:
            return [([], [], [], []) for _ in nodes]
        tok_m = np.stack(toks)[::-1].T.tolist()
        start_m = np.stack(starts)[::-1].T.tolist()
        prev_m = np.stack(prev_ends)[::-1].T.tolist()
        word_m = np.stack(words)[::-1].T.tolist() if words else None
        for i in range(len(nodes)):
            tk = tok_m[i]
            skip = next((j for j, t in enumerate(tk) if t >= 0), len(tk))
            tk, sf, pe = tk[skip:], start_m[i][skip:], prev_m[i][skip:]
            wd = word_m[i][skip:] if word_m is not None else []
            ends = pe[1:] + [int(last_end[i])] if tk else []  # a label ends where the next starts
            out.append((tk, [rows[a] for a in sf], [rows[a] + 1 for a in ends], wd))
        return out
