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
from ctclab.decoders.timestamps import make_words, word_spans

NEG_INF = -math.inf


# Rows of the packed beam state. Floats (ln scores):
PB, PNB, LM, PART = range(4)
# pb: ln P(prefix, path ends in blank); pnb: ln P(prefix, path ends in its last label);
# lm: word scores so far (LM, bonuses, penalties of finished words); part: unfinished word's score.
# Integers:
UTT, LAST, NODE, END, WNODE, CTX, PARENT = range(7)
# utt: utterance in the batch; last: last label (V = none: empty prefix without a delimiter label);
# node: prefix node id (-1 = empty); end: active-frame index where the last label was last emitted;
# wnode: trie node of the unfinished word (0 = none); ctx: LM context id; parent: row of the live
# beam holding this prefix minus its last label, or -1.


@dataclass
class _Beams:
    """Packed struct of arrays: f (4, N) float64 and i (7, N) int64, one column per beam."""

    f: np.ndarray
    i: np.ndarray

    def take(self, idx: np.ndarray) -> _Beams:
        return _Beams(self.f[:, idx], self.i[:, idx])


# Multiplier of the 64-bit rolling hash of a prefix's labels (odd, so no label is lost mod 2^64).
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


class _Nodes:
    """Growable prefix-node table: parent node, label, active index of its first frame, the
    active index where the parent's last label was last emitted (that label's end), and a 64-bit
    hash of the prefix's labels (the empty prefix hashes to 0).

    One text can own several nodes (a prefix pruned and spelled again later while a child of
    the old node lives on); the hash tells such duplicates apart from different texts."""

    def __init__(self) -> None:
        self.size = 0
        # The last column is never filled: indexing with node -1 reads it, so the empty prefix
        # hashes to 0 without a mask.
        self.data = np.zeros((5, 4096), np.int64)

    def add(self, parent: np.ndarray, label: np.ndarray, start: np.ndarray, prev_end: np.ndarray
            ) -> np.ndarray:
        n = len(parent)
        if self.size + n >= self.data.shape[1]:
            grown = np.zeros((5, max(2 * self.data.shape[1], self.size + n + 1)), np.int64)
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
        ids = np.arange(self.size, end)
        self.size = end
        return ids

    def text_hash(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) int64 hash of each node's labels; 0 for the empty prefix (node -1)."""
        return self.data[4].take(nodes)


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
        self.nodes = _Nodes()
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
        self.any_gap = self.has_gap.any(axis=1)
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
            i = np.zeros((7, n), np.int64)
            i[UTT], i[LAST], i[NODE], i[CTX], i[PARENT] = utts, root_last, -1, start_ctx, -1
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
        if m:
            src = rng[:n].repeat(k)
            ci = (ti[1] - (k.cumsum() - k)).repeat(k) + rng[:m]
            tok = self.cand_tok[ci]
            # base: tot of the source beam, or its pb when the label repeats its last label
            pick = np.concatenate((tot, pb_rep))
            rep_src = (tok == last[src]) * n
            rep_src += src
            base = pick[rep_src] + self.cand_lp[ci]
            # Merge into live beams: A + c is the live B whose parent is A and whose last is c.
            # Keys are shifted by one row so that parentless beams (-1) land in a row never asked.
            if len(self._merge_buf) < (n + 1) * w:
                self._merge_buf = np.full(2 * (n + 1) * w, -1, np.int64)
            mb = self._merge_buf
            pkeys = i[PARENT] * w + last
            pkeys += w
            mb[pkeys] = rng[:n]
            q = src * w
            q += tok
            q += w
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
        fp = np.empty((4, n + e))
        ip = np.empty((7, n + e), np.int64)
        fp[PB, :n], fp[PNB, :n], fp[LM:, :n] = stay_pb, stay_pnb, f[LM:]
        ip[:, :n] = i
        np.copyto(ip[END, :n], ar, where=stay_pnb > stay_pb)
        if e:
            fp[PB, n:], fp[PNB, n:], fp[LM:, n:] = NEG_INF, base, f[LM:].take(src, axis=1)
            ip[:, n:] = i.take(src, axis=1)
            ip[LAST, n:], ip[END, n:], ip[PARENT, n:] = tok, ar.take(src), src
            if self.scorer is not None:
                self._score_words(fp[:, n:], ip[:, n:])
        return self._prune(_Beams(fp, ip), n, n_utt, i[END], stay_score, best)

    def _score_words(self, f: np.ndarray, i: np.ndarray) -> None:
        """Word-trie moves of the extensions (in place); finished words scored at delimiters."""
        scorer = self.scorer
        assert scorer is not None  # only called when words are scored
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
            delta, ctx = scorer.complete(i[CTX].take(words), i[WNODE].take(words))
            f[LM, words] += delta
            i[CTX, words] = ctx
            f[PART, words] = 0.0
            i[WNODE, words] = 0

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
            ie[NODE] = self.nodes.add(ie[NODE], ie[LAST], ie[END], old_end.take(ie[PARENT]))
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
        if self.scorer is not None:  # the unfinished word is a word now; then </s>
            open_word = np.flatnonzero(i[WNODE] > 0)
            ctx = i[CTX].copy()
            if len(open_word):
                delta, ctx[open_word] = self.scorer.complete(ctx[open_word], i[WNODE, open_word])
                lm[open_word] += delta
            lm += self.scorer.end(ctx)
        total = acoustic + lm
        bad = ~np.isfinite(total)
        if bad.any():  # hard lexicon mode left no valid word: fall back to the scores before it
            valid_utt = np.zeros(n_utt, bool)
            valid_utt[utt[~bad]] = True
            fallback = bad & ~valid_utt[utt] & np.isfinite(acoustic)
            lm[fallback] = f[LM, fallback]
            total = acoustic + lm
        ok = np.flatnonzero(np.isfinite(total))
        # Beams with one text are one hypothesis: merge them, by text hash (one text can own
        # several prefix nodes), counting a trailing delimiter as no label.
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
        spans = [word_spans(tokens, start_rows, end_rows, self.vocab)
                 for tokens, start_rows, end_rows in paths]
        # Frame confidence of every word of every hypothesis in one pass over the batch's rows
        # (a pass per hypothesis cost more than the n-best search itself).
        flat = [s for ws in spans for s in ws]
        conf = word_frame_confidence(self.x, [s.tokens for s in flat],
                                     [(s.start, s.end) for s in flat]).tolist()
        at = 0
        for gi, (tokens, _, _), ws in zip(chosen.tolist(), paths, spans, strict=True):
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

    def _paths(self, nodes: np.ndarray, last_end: np.ndarray
               ) -> list[tuple[list[int], list[int], list[int]]]:
        """Labels, first rows and rows after the last of each prefix node's labels.

        nodes: (n,) prefix node ids; last_end: (n,) active index where each last label ended.
        """
        data = self.nodes.data
        rows = self.act_rows.tolist()
        cur = nodes.copy()
        toks, starts, prev_ends = [], [], []
        while (cur >= 0).any():
            live = cur >= 0
            safe = np.maximum(cur, 0)
            toks.append(np.where(live, data[1, safe], -1))
            starts.append(data[2, safe])
            prev_ends.append(data[3, safe])
            cur = np.where(live, data[0, safe], -1)
        out = []
        if not toks:
            return [([], [], []) for _ in nodes]
        tok_m = np.stack(toks)[::-1].T.tolist()
        start_m = np.stack(starts)[::-1].T.tolist()
        prev_m = np.stack(prev_ends)[::-1].T.tolist()
        for i in range(len(nodes)):
            tk = tok_m[i]
            skip = next((j for j, t in enumerate(tk) if t >= 0), len(tk))
            tk, sf, pe = tk[skip:], start_m[i][skip:], prev_m[i][skip:]
            ends = pe[1:] + [int(last_end[i])] if tk else []  # a label ends where the next starts
            out.append((tk, [rows[a] for a in sf], [rows[a] + 1 for a in ends]))
        return out
