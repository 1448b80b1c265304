"""The array engine of the ``beam`` decoder: CTC prefix beam search over a batch of utterances.

All live beams of all utterances of a batch sit in one set of flat arrays (one row per beam). Each
step advances every utterance by one of its *active* frames (frames where blank is not
near-certain; the skipped frames in between are folded in closed form), so a step costs a fixed
number of numpy calls whatever the batch size. Per step:

1. stays: every beam keeps its prefix: p_b' = p(prefix) * p(blank); p_nb' = p_nb * p(last label)
   (the last label continues; a label repeated needs a blank in between).
2. extensions: every (beam, candidate label) pair of the beam's utterance, candidates being the
   labels that survived the per-frame token pruning (precomputed for all frames at once).
3. merging: an extension A + c that equals a live prefix B (B's parent is A and B ends in c) is
   added to B. Live beams carry the row of their parent prefix, so this is one table lookup.
4. word scoring at word boundaries (decoders.lm_fusion), then pruning per utterance: score
   threshold relative to the utterance's best beam, then the beam width.

Scores are natural logs in float64. Frames are global rows of the concatenated batch until results
are built. The word delimiter is folded: a delimiter after a delimiter (or at the start) keeps the
same prefix, so texts that differ only in repeated / leading delimiters share one beam.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from decoders.hypothesis import Hypothesis
from decoders.lm_fusion import WordScorer
from decoders.timestamps import word_timestamps
from decoders.vocabulary import Vocabulary

NEG_INF = -math.inf


@dataclass(frozen=True)
class SearchSettings:
    """Search parameters the engine needs (a subset of BeamOptions, already validated)."""

    beam_width: int
    token_min_logp: float
    token_top_k: int | None
    beam_prune_logp: float
    blank_skip_threshold: float | None
    nbest: int
    max_word_gain: float   # upper bound of the score a word step can add (for early pruning)


@dataclass
class _Beams:
    """Struct of arrays, one entry per live beam."""

    utt: np.ndarray       # int64 utterance index in the batch
    pb: np.ndarray        # float64 ln P(prefix, path ends in blank)
    pnb: np.ndarray       # float64 ln P(prefix, path ends in its last label)
    last: np.ndarray      # int64 last label (-1 = empty prefix without a delimiter label)
    node: np.ndarray      # int64 prefix node id (-1 = empty prefix)
    last_end: np.ndarray  # int64 global row after the last frame the last label was emitted in
    lm: np.ndarray        # float64 word scores so far (LM, bonus, penalties of finished words)
    partial: np.ndarray   # float64 score of the unfinished word (penalty / hotword bonus)
    wnode: np.ndarray     # int64 trie node of the unfinished word (0 = none)
    ctx: np.ndarray       # int64 LM context id
    parent: np.ndarray    # int64 row of the beam holding this prefix minus its last label, or -1

    def take(self, idx: np.ndarray) -> _Beams:
        return _Beams(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: Sequence[_Beams]) -> _Beams:
        return _Beams(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Beams)))


class _Nodes:
    """Growable table of prefix nodes: parent node, label, first row, row where the parent ended."""

    def __init__(self) -> None:
        self.size = 0
        self.data = np.empty((4, 4096), np.int64)

    def add(self, parent: np.ndarray, label: np.ndarray, start: np.ndarray, prev_end: np.ndarray
            ) -> np.ndarray:
        n = len(parent)
        if self.size + n > self.data.shape[1]:
            grown = np.empty((4, max(2 * self.data.shape[1], self.size + n)), np.int64)
            grown[:, : self.size] = self.data[:, : self.size]
            self.data = grown
        ids = np.arange(self.size, self.size + n)
        self.data[0, ids], self.data[1, ids], self.data[2, ids], self.data[3, ids] = (
            parent, label, start, prev_end)
        self.size += n
        return ids


def _lae(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.logaddexp(a, b)


class BatchSearch:
    """One search over a batch of validated (T_i, V) float32 log-prob arrays."""

    def __init__(self, emissions: Sequence[np.ndarray], vocab: Vocabulary,
                 settings: SearchSettings, scorer: WordScorer | None, frame_shift_s: float):
        self.vocab, self.settings, self.frame_shift_s = vocab, settings, frame_shift_s
        self.scorer = scorer if scorer is not None and scorer.active else None
        self.lengths = np.array([len(e) for e in emissions], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.x = np.concatenate(emissions) if len(emissions) else np.zeros((0, vocab.size),
                                                                           np.float32)
        self.flat = self.x.ravel()
        self.delim = vocab.delimiter
        self.nodes = _Nodes()
        self._merge_buf = np.full(1024, -1, np.int64)

    # ----------------------------------------------------------------------------- schedule
    def _schedule(self) -> None:
        """Active frames per step, blank mass of skipped gaps, and token candidates per step."""
        vocab, st = self.vocab, self.settings
        n_utt = len(self.lengths)
        blank = self.x[:, vocab.blank].astype(np.float64)
        cum = np.concatenate([[0.0], np.cumsum(blank)])
        utt_of_row = np.repeat(np.arange(n_utt), self.lengths)
        if st.blank_skip_threshold is None:
            active = np.ones(len(blank), bool)
        else:
            active = blank < math.log(st.blank_skip_threshold)
        rows = np.flatnonzero(active)
        utt = utt_of_row[rows]
        n_act = np.bincount(utt, minlength=n_utt)
        first = np.cumsum(n_act) - n_act
        step = np.arange(len(rows)) - first[utt]
        prev = np.where(step > 0, np.roll(rows, 1), self.offsets[utt] - 1)
        self.n_act = n_act
        self.n_steps = int(n_act.max(initial=0))
        shape = (self.n_steps, n_utt)
        self.row = np.zeros(shape, np.int64)
        self.gap = np.zeros(shape, np.float64)
        self.has_gap = np.zeros(shape, bool)
        self.row[step, utt] = rows
        self.gap[step, utt] = cum[rows] - cum[prev + 1]
        self.has_gap[step, utt] = rows > prev + 1
        self.any_gap = self.has_gap.any(axis=1)
        last_row = np.where(n_act > 0, rows[np.maximum(first + n_act - 1, 0)] if len(rows) else 0,
                            self.offsets - 1)
        self.trail = cum[self.offsets + self.lengths] - cum[last_row + 1]
        # Candidates: labels passing the threshold (and top-k), plus each frame's argmax label.
        sub = self.x[rows]
        emit = np.zeros(vocab.size, bool)
        emit[vocab.emitting_ids] = True
        mask = (sub >= st.token_min_logp) & emit
        if len(rows):
            best = sub.argmax(axis=1)
            mask[np.arange(len(rows)), best] |= emit[best]
        if st.token_top_k is not None and st.token_top_k < vocab.size and len(rows):
            kth = -np.partition(-sub, st.token_top_k - 1, axis=1)[:, st.token_top_k - 1]
            mask &= sub >= kth[:, None]
        order = np.lexsort((utt, step))
        r, tok = np.nonzero(mask[order])
        self.cand_tok = tok.astype(np.int64)
        self.cand_lp = sub[order[r], tok].astype(np.float64)
        counts = mask.sum(axis=1)[order]
        self.cand_start = np.zeros(shape, np.int64)
        self.cand_count = np.zeros(shape, np.int64)
        self.cand_start[step[order], utt[order]] = np.cumsum(counts) - counts
        self.cand_count[step[order], utt[order]] = counts

    # ----------------------------------------------------------------------------- search
    def run(self) -> list[list[Hypothesis]]:
        """Search every utterance; per utterance its hypotheses, best first (>= 1)."""
        self._schedule()
        n_utt = len(self.lengths)
        start_ctx = self.scorer.start_context if self.scorer is not None else 0
        root_last = self.delim if self.delim is not None else -1

        def roots(utts: np.ndarray) -> _Beams:
            n = len(utts)
            return _Beams(utts.astype(np.int64), np.zeros(n), np.full(n, NEG_INF),
                          np.full(n, root_last, np.int64), np.full(n, -1, np.int64),
                          self.offsets[utts].copy(), np.zeros(n), np.zeros(n),
                          np.zeros(n, np.int64), np.full(n, start_ctx, np.int64),
                          np.full(n, -1, np.int64))

        finished: list[_Beams] = [roots(np.flatnonzero(self.n_act == 0))]
        beams = roots(np.flatnonzero(self.n_act > 0))
        finish_step = self.n_act - 1
        for s in range(self.n_steps):
            beams = self._step(s, beams, n_utt)
            done = finish_step[beams.utt] == s
            if done.any():
                finished.append(beams.take(done))
                keep = ~done
                newpos = np.cumsum(keep) - 1
                beams = beams.take(keep)
                beams.parent = np.where(beams.parent >= 0, newpos[beams.parent], -1)
        return self._finish(_Beams.concat(finished), n_utt)

    def _step(self, s: int, b: _Beams, n_utt: int) -> _Beams:
        st, flat, v = self.settings, self.flat, self.vocab.size
        u = b.utt
        pb, pnb = b.pb, b.pnb
        if self.any_gap[s]:
            g = self.has_gap[s, u]
            folded = _lae(pb, pnb) + self.gap[s, u]
            pb = np.where(g, folded, pb)
            pnb = np.where(g, NEG_INF, pnb)
        rows = self.row[s, u]
        base_idx = rows * v
        tot = _lae(pb, pnb)
        stay_pb = tot + flat[base_idx + self.vocab.blank]
        rep = flat[base_idx + np.maximum(b.last, 0)]
        if self.delim is not None:
            stay_pnb = np.where(b.last == self.delim, tot, pnb) + rep
        else:
            stay_pnb = np.where(b.last >= 0, pnb + rep, NEG_INF)
        last_end = np.where(stay_pnb > stay_pb, rows + 1, b.last_end)

        k = self.cand_count[s, u]
        m = int(k.sum())
        n = len(u)
        ext: _Beams | None = None
        if m:
            src = np.repeat(np.arange(n), k)
            cum = np.cumsum(k)
            ci = np.arange(m) + np.repeat(self.cand_start[s, u] - (cum - k), k)
            tok = self.cand_tok[ci]
            src_last = b.last[src]
            base = np.where(tok == src_last, pb[src], tot[src]) + self.cand_lp[ci]
            if self.delim is not None:
                base[(tok == self.delim) & (src_last == self.delim)] = NEG_INF
            # Merge into live beams: B = A + c where B.parent == A and B.last == c.
            has_parent = np.flatnonzero(b.parent >= 0)
            keep = base > NEG_INF
            if len(has_parent):
                if len(self._merge_buf) < n * v:
                    self._merge_buf = np.full(2 * n * v, -1, np.int64)
                pkeys = b.parent[has_parent] * v + b.last[has_parent]
                self._merge_buf[pkeys] = has_parent
                target = self._merge_buf[src * v + tok]
                self._merge_buf[pkeys] = -1
                merged = target >= 0
                if merged.any():
                    t = target[merged]
                    stay_pnb[t] = _lae(stay_pnb[t], base[merged])
                    keep &= ~merged
            stay_score = _lae(stay_pb, stay_pnb) + b.lm + b.partial
            if st.beam_prune_logp > NEG_INF:
                best = np.full(n_utt, NEG_INF)
                np.maximum.at(best, u, stay_score)
                bound = base + b.lm[src] + st.max_word_gain
                keep &= bound >= best[u[src]] + st.beam_prune_logp
            sel = np.flatnonzero(keep)
            if len(sel):
                src, tok, base = src[sel], tok[sel], base[sel]
                ext = _Beams(u[src], np.full(len(sel), NEG_INF), base, tok,
                             b.node[src], b.last_end[src], b.lm[src], b.partial[src],
                             b.wnode[src], b.ctx[src], src)
                ext.last_end = rows[src]  # start row for now; turned into last_end below
                if self.scorer is not None:
                    ext = self._score_words(ext)
        stays = _Beams(u, stay_pb, stay_pnb, b.last, b.node, last_end, b.lm, b.partial, b.wnode,
                       b.ctx, b.parent)
        pool = stays if ext is None else _Beams.concat([stays, ext])
        return self._prune(pool, n, n_utt, b)

    def _score_words(self, e: _Beams) -> _Beams:
        """Word-trie moves of the extensions; finished words scored at delimiters."""
        scorer = self.scorer
        is_delim = e.last == self.delim if self.delim is not None else np.zeros(len(e.last), bool)
        letters = np.flatnonzero(~is_delim)
        if len(letters):
            nodes = scorer.trie.children(e.wnode[letters], e.last[letters])
            e.wnode[letters] = nodes
            e.partial[letters] = scorer.partial_scores(nodes)
            if scorer.hard:
                e.pnb[letters[~scorer.allowed(nodes)]] = NEG_INF
        words = np.flatnonzero(is_delim)
        if len(words):
            delta, ctx = scorer.complete(e.ctx[words], e.wnode[words])
            e.lm[words] += delta
            e.ctx[words] = ctx
            e.partial[words] = 0.0
            e.wnode[words] = 0
        return e

    def _prune(self, pool: _Beams, n_stays: int, n_utt: int, old: _Beams) -> _Beams:
        st = self.settings
        score = _lae(pool.pb, pool.pnb) + pool.lm + pool.partial
        keep = score > NEG_INF
        if st.beam_prune_logp > NEG_INF:
            best = np.full(n_utt, NEG_INF)
            np.maximum.at(best, pool.utt, score)
            keep &= score >= best[pool.utt] + st.beam_prune_logp
        sel = np.flatnonzero(keep)
        counts = np.bincount(pool.utt[sel], minlength=n_utt)
        if counts.max(initial=0) > st.beam_width:
            order = sel[np.lexsort((-score[sel], pool.utt[sel]))]
            group_first = np.cumsum(counts) - counts
            rank = np.arange(len(order)) - group_first[pool.utt[order]]
            sel = np.sort(order[rank < st.beam_width])
        out = pool.take(sel)
        newpos = np.full(len(score), -1, np.int64)
        newpos[sel] = np.arange(len(sel))
        e = np.flatnonzero(sel >= n_stays)
        if len(e):
            # Extensions carry their source beam's row in `parent` and their start row in
            # `last_end` until here: now they get a prefix node.
            src = out.parent[e]
            start_rows = out.last_end[e]
            out.node[e] = self.nodes.add(out.node[e], out.last[e], start_rows, old.last_end[src])
            out.last_end[e] = start_rows + 1
        out.parent = np.where(out.parent >= 0, newpos[out.parent], -1)
        return out

    # ----------------------------------------------------------------------------- results
    def _finish(self, b: _Beams, n_utt: int) -> list[list[Hypothesis]]:
        acoustic = _lae(b.pb, b.pnb) + self.trail[b.utt]
        lm = b.lm.copy()
        if self.scorer is not None:
            open_word = np.flatnonzero(b.wnode > 0)
            ctx = b.ctx.copy()
            if len(open_word):
                delta, ctx[open_word] = self.scorer.complete(b.ctx[open_word], b.wnode[open_word])
                lm[open_word] += delta
            lm += self.scorer.end(ctx)
        total = acoustic + lm
        bad = ~np.isfinite(total)
        if bad.any():  # hard lexicon mode left no valid word: fall back to the scores before it
            valid_utt = np.zeros(n_utt, bool)
            valid_utt[b.utt[~bad]] = True
            fallback = bad & ~valid_utt[b.utt] & np.isfinite(acoustic)
            lm[fallback] = b.lm[fallback]
            total = acoustic + lm
        ok = np.flatnonzero(np.isfinite(total))
        # Texts that differ by a trailing delimiter are one text: merge them.
        canon = b.node.copy()
        if self.delim is not None:
            trailing = (b.last == self.delim) & (b.node >= 0)
            canon[trailing] = self.nodes.data[0, b.node[trailing]]
        key = b.utt * (self.nodes.size + 2) + canon + 1
        order = ok[np.lexsort((-total[ok], key[ok]))]
        skey = key[order]
        starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
        rep = order[starts]
        g_total = np.logaddexp.reduceat(total[order], starts)
        g_acoustic = np.logaddexp.reduceat(acoustic[order], starts)
        g_utt = b.utt[rep]
        # Best groups first within each utterance.
        rank_order = np.lexsort((-g_total, g_utt))
        per_utt: list[list[Hypothesis]] = [[] for _ in range(n_utt)]
        want = max(1, self.settings.nbest)
        counts = np.zeros(n_utt, np.int64)
        chosen = []
        for gi in rank_order.tolist():
            ut = int(g_utt[gi])
            if counts[ut] < want:
                counts[ut] += 1
                chosen.append(gi)
        paths = self._paths(b.node[rep[chosen]], b.last_end[rep[chosen]])
        for gi, (tokens, starts_f, ends_f) in zip(chosen, paths):
            ut = int(g_utt[gi])
            off = int(self.offsets[ut])
            words = word_timestamps(tokens, [x - off for x in starts_f], [x - off for x in ends_f],
                                    self.vocab, self.frame_shift_s)
            score = float(g_total[gi])
            ac = float(g_acoustic[gi])
            per_utt[ut].append(Hypothesis(
                text=" ".join(w.word for w in words), score=score, tokens=tuple(tokens),
                words=words, acoustic_score=ac, lm_score=score - ac))
        for ut in range(n_utt):
            if not per_utt[ut]:
                per_utt[ut].append(Hypothesis.empty())
        return per_utt

    def _paths(self, nodes: np.ndarray, last_end: np.ndarray
               ) -> list[tuple[list[int], list[int], list[int]]]:
        """Labels, start rows and end rows of each prefix node's path (vectorized walk)."""
        data = self.nodes.data
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
            ends = pe[1:] + [int(last_end[i])]
            out.append((tk, sf, ends))
        return out
