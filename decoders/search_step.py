"""One step of the batch beam search: every live beam of every utterance advances by one
active frame, in a fixed number of array operations whatever the batch size (no Python loop over
beams or labels), in the search's array namespace (numpy, or torch on the CPU or a GPU):

1. what happened since the last step: skipped blank frames (all mass moves to blank) and a
   folded run of the last label (decoders.search_schedule);
2. stays: every beam keeps its prefix: p_b' = p(prefix) * p(blank); p_nb' = p_nb * p(last label)
   (the last label continues; a label repeated needs a blank in between);
3. extensions: every (beam, candidate label) pair of the beam's utterance, candidates being the
   labels that survived the frame's token pruning (and, in hard lexicon mode, the lexicon's);
4. merging: an extension A + c that equals a live prefix B (B's parent is A and B ends in c) is
   added to B. Live beams carry the column of their parent prefix, so this is one table lookup;
5. word scoring of the extensions (decoders.search_words), then pruning per utterance: score
   threshold relative to the utterance's best beam, then the beam width.

Scores are natural logs in float64. The word delimiter is folded: a delimiter after a delimiter
(or at the start) keeps the same prefix. Timestamps: each prefix node records the frame its label
started in and where its parent's label ended.
"""
from __future__ import annotations

import sys
from typing import Any

from ctclab.core.arrays import Arrays
from ctclab.decoders.constants import EARLY_PRUNE_MIN_CANDIDATES
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_schedule import (
    AR,
    BLANK,
    FLOOR,
    GAP,
    GAP_KEEP,
    GAP_TAKE,
    RUN_B,
    RUN_END,
    RUN_NB,
    XOFF,
    Schedule,
)
from ctclab.decoders.search_state import (
    CHOICE,
    END,
    HASH,
    HASH_MUL,
    LAST,
    LM,
    NODE,
    PARENT,
    PART,
    PB,
    PEND,
    PNB,
    UTT,
    WNODE,
    WORD,
    Beams,
    Nodes,
)
from ctclab.decoders.search_words import SearchWords

NEG_INF = float("-inf")
_LOWEST = -sys.float_info.max


class Stepper:
    """Advances the beams of one batch, step by step. Tables: the schedule's, on the device."""

    def __init__(self, xp: Arrays, tables: dict[str, Any], schedule: Schedule,
                 options: BeamOptions, n_int: int, delim: int | None,
                 vocab_size: int, words: SearchWords | None, nodes: Nodes):
        self.xp, self.options = xp, options
        # the schedule's tables on the search's device
        self.tab_i, self.tab_f, self.xf = tables["tab_i"], tables["tab_f"], tables["xf"]
        self.cand_tok, self.cand_lp = tables["cand_tok"], tables["cand_lp"]
        self.cand_cell = tables["cand_cell"]
        n_utt = len(schedule.steps)
        # per-step scalars as Python lists: indexing a list costs less than a numpy scalar
        self.any_gap, self.any_run = schedule.any_gap.tolist(), schedule.any_run.tolist()
        self.cand_k, self.cand_off = schedule.cand_k.tolist(), schedule.cand_off.tolist()
        self.cols, self.tab_col = schedule.rows.tolist(), schedule.tab_col.tolist()
        self.ragged = schedule.cand_ragged.tolist()
        # share of the batch's beam-steps (utterance-steps) done after each step: how far a
        # full node table grows
        work = schedule.rows.cumsum()
        self.done_after = (work / max(int(work[-1]), 1)).tolist() if len(work) else []
        self.progress = 1.0
        self.n_utt, self.n_int, self.delim, self.vocab_size = n_utt, n_int, delim, vocab_size
        self.words, self.nodes = words, nodes
        self.hard = words is not None and words.hard
        self.forks = words is not None and words.forks
        self.words_out = words is not None and words.words_out
        self.plain = not self.hard and not self.forks
        # float rows of the beams: without words, LM and PART are always 0 and left out
        self.n_float = 4 if words is not None else 2
        homophones = words.scorer.homophones if words is not None and self.forks else 1
        # merge keys: labels, the sentinel, and one column per homophone choice beyond the first
        self.merge_width = vocab_size + 1 + (homophones - 1)
        self.max_word_gain = words.scorer.max_word_gain if words is not None else 0.0
        self._merge_buf = xp.full(1024, -1, xp.int64)
        self._newpos = xp.full(1024, -1, xp.int64)
        self._arange = xp.arange(1024)

    def _range(self, n: int) -> Any:
        if len(self._arange) < n:
            self._arange = self.xp.arange(2 * n)
        return self._arange[:n]

    def step(self, s: int, b: Beams, finish_from: int | None = None
             ) -> tuple[Beams, Beams | None]:
        """Beams after step s, and (when finish_from is given) the beams of the utterances whose
        last step this was, slots >= finish_from, split off (else None)."""
        # Few, fused array calls: arrays hold ~100s of beams, so per-call overhead dominates.
        xp, st, delim = self.xp, self.options, self.delim
        f, i = b.f, b.i
        u, last, n = i[UTT], i[LAST], f.shape[1]
        # the step's table columns (decoders.search_schedule), one per beam
        cols, col = self.cols[s], u + self.tab_col[s]
        self.progress = self.done_after[s]
        ti = xp.take(self.tab_i, col, 1)   # (3, n): XOFF .. RUN_END
        tf = xp.take(self.tab_f, col, 1)   # (7, n): GAP .. FLOOR
        pb, pnb = f[PB], f[PNB]
        if self.any_run[s]:  # a run folded since the last step: pb = -inf before it, so
            # pb = pnb + run_b; other utterances have run_b = -inf and keep pb, run_nb = 0 and
            # keep pnb. One of the two is -inf, so the maximum is their logaddexp, exactly (and
            # costs a compare, not an exp and a log per beam)
            pb = xp.maximum(pb, pnb + tf[RUN_B])
            pnb = pnb + tf[RUN_NB]
            i[END] = xp.maximum(i[END], ti[RUN_END])   # a run ends after any END; none: -1
        tot = xp.logaddexp(pb, pnb)
        if self.any_gap[s]:  # blank-certain frames skipped since the last step: all mass -> blank
            # (where a gap: pb = tot, pnb = -inf; elsewhere both kept: search_schedule, GAP_KEEP)
            tot += tf[GAP]
            pb = xp.maximum(pb + tf[GAP_KEEP], tot + tf[GAP_TAKE])
            pnb = pnb + tf[GAP_KEEP]
        xoff = ti[XOFF]
        stay_pb = tot + tf[BLANK]
        rep = xp.take(self.xf, xoff + last)
        # the last label continues only where it is usable (token pruning: -inf below the floor)
        rep = xp.where(rep >= tf[FLOOR], rep, NEG_INF)
        if delim is not None:   # a delimiter after a delimiter keeps the prefix
            last_delim = last == delim
            stay_pnb = xp.where(last_delim, tot, pnb) + rep
            # ... and is no extension: its "repeat" base is -inf
            pb_rep = xp.where(last_delim, NEG_INF, pb)
        else:
            stay_pnb = pnb + rep
            pb_rep = pb
        # the step's candidates: a dense block, row u holding utterance u's labels (padding:
        # V, -inf), or ragged (decoders/search_schedule.py)
        k = self.cand_k[s]
        lo, hi = self.cand_off[s], self.cand_off[s + 1]
        ragged = self.ragged[s]
        if ragged:
            cell = xp.take(self.cand_cell, col, 1)   # (2, n)
            src, tok, lp, first = self._ragged_candidates(cell, lo)
        else:
            tok2 = xp.take(self.cand_tok[lo:hi].reshape(cols, k), u, 0)   # (n, k)
            lp2 = xp.take(self.cand_lp[lo:hi].reshape(cols, k), u, 0)
        if self.plain:
            if ragged:
                src, tok, base, stay_pnb, stay_score, best = self._plain_ragged_extensions(
                    f, i, tot, pb_rep, stay_pb, stay_pnb, src, tok, lp, first)
            else:
                src, tok, base, stay_pnb, stay_score, best = self._plain_extensions(
                    f, i, tot, pb_rep, stay_pb, stay_pnb, tok2, lp2)
            choice = None
        else:
            if not ragged:
                sel = xp.flatnonzero(lp2.reshape(-1) > NEG_INF)
                src, tok, lp = sel // k, xp.take(tok2.reshape(-1), sel), xp.take(lp2.reshape(-1),
                                                                                 sel)
            src, tok, base, stay_pnb, choice = self._general_extensions(
                f, i, u, tot, pb_rep, stay_pb, stay_pnb, src, tok, lp, xoff)
            stay_score = self._stay_score(f, stay_pb, stay_pnb)
            best = None
            if len(src) >= EARLY_PRUNE_MIN_CANDIDATES and self.words is not None \
                    and st.beam_prune_logp > NEG_INF:
                # extensions that cannot reach the threshold: dropped before any word scoring
                best = xp.segment_max(stay_score, u, self.n_utt)
                bound = best - self.max_word_gain + st.beam_prune_logp
                sel = xp.flatnonzero(base + xp.take(f[LM], src)
                                     >= xp.take(bound, xp.take(u, src)))
                src, tok, base = xp.take(src, sel), xp.take(tok, sel), xp.take(base, sel)
                if choice is not None:
                    choice = xp.take(choice, sel)
        e = len(src)
        # the pool: the stays, then the extensions, each column first a copy of its beam (the
        # stay's own, the extension's parent) in one gather per array, then what changed
        # written over it (two gathers and a concatenation instead of ten writes)
        origin = xp.concat((self._range(n), src))
        ip = xp.take(i, origin, 1)
        if self.words is not None:   # LM and PART carry over; PB and PNB are written below
            fp = xp.take(f, origin, 1)
        else:
            fp = xp.empty((self.n_float, n + e), xp.float64)
        fp[PB, :n], fp[PNB, :n] = stay_pb, stay_pnb
        xp.copy_where(ip[END, :n], ti[AR], stay_pnb > stay_pb)
        if e:
            fp[PB, n:] = NEG_INF
            fp[PNB, n:] = base
            ext = ip[:, n:]
            ext[PEND] = ext[END]   # the parent's last label ends where this one starts
            ext[LAST], ext[END], ext[PARENT] = tok, xp.take(ti[AR], src), src
            h = ext[HASH]
            h *= HASH_MUL   # wraps mod 2^64, in numpy and torch alike
            h += tok
            h += 1
            if self.words_out:
                ip[CHOICE, n:] = 0 if choice is None else choice
                ip[WORD, n:] = -1
            if self.words is not None:
                self.words.score(fp[:, n:], ip[:, n:])
        return self.prune(Beams(fp, ip), n, stay_score, best, finish_from)

    def _stay_score(self, f: Any, stay_pb: Any, stay_pnb: Any) -> Any:
        """(n,) scores of the stays (without words: their acoustic mass alone)."""
        score = self.xp.logaddexp(stay_pb, stay_pnb)
        if self.words is not None:
            score += f[LM]
            score += f[PART]
        return score

    def _plain_extensions(self, f: Any, i: Any, tot: Any, pb_rep: Any, stay_pb: Any,
                          stay_pnb: Any, tok2: Any, lp2: Any) -> tuple[Any, ...]:
        """Extensions when every beam's candidates are its utterance's frame labels: (src, tok,
        base) of those that may live, stay_pnb with the merged ones added, the stays' scores,
        and their best per utterance (None unless words prune extensions early).

        Merging reads from the target's side: a live beam B with parent column P and last label
        c receives the extension P + c, which sits in P's row (the same utterance, so the same
        candidates) at the column where c is, the column B's own row marks in ``is_rep``."""
        xp = self.xp
        n, k = tok2.shape
        if not k:  # no candidates in this step
            none = xp.zeros(0, xp.int64)
            return (none, none, xp.zeros(0, xp.float64), stay_pnb,
                    self._stay_score(f, stay_pb, stay_pnb), None)
        # base: tot of the source beam, or its pb when the label repeats its last label
        is_rep = tok2 == i[LAST][:, None]
        base = xp.empty(n * k + 1, xp.float64)   # one slot more: where non-merges point
        base2 = base[: n * k].reshape(n, k)
        xp.add(xp.where(is_rep, pb_rep[:, None], tot[:, None]), lp2, out=base2)
        parent = i[PARENT]
        # where each beam's last label sits among its candidates, without reductions along rows
        # of 1-3 (an any and an argmax there were the step's slowest calls). A row holds a label
        # at most once; only a root's sentinel last meets the padding, and a root has no parent.
        if k == 1:   # a third of the real set's steps
            at = xp.where(is_rep[:, 0] & (parent >= 0), parent, n)
        else:
            hit = xp.flatnonzero(is_rep.reshape(-1))
            row = hit // k
            par = xp.take(parent, row)
            at = xp.full(n, n * k, xp.int64)
            at[row] = xp.where(par >= 0, (par - row) * k + hit, n * k)
        base[n * k] = NEG_INF
        stay_pnb = xp.logaddexp(stay_pnb, xp.take(base, at))   # logaddexp(x, -inf) == x
        base[at] = NEG_INF
        stay_score = self._stay_score(f, stay_pb, stay_pnb)
        best = bound = None
        if n * k >= EARLY_PRUNE_MIN_CANDIDATES:
            best, bound = self._early_bound(stay_score, i[UTT])
        if bound is not None:
            live = base2 + f[LM][:, None] >= xp.take(bound, i[UTT])[:, None]
        else:
            live = base2 > NEG_INF
        sel = xp.flatnonzero(live.reshape(-1))
        return (sel // k, xp.take(tok2.reshape(-1), sel), xp.take(base, sel), stay_pnb,
                stay_score, best)

    def _early_bound(self, stay_score: Any, u: Any) -> tuple[Any, Any]:
        """(best stay score, bound) per utterance when words are scored and pruned by score, else
        (None, None): extensions whose score plus the most a word can gain stays below the bound
        cannot reach the threshold and are dropped before any word scoring. A bound of -inf (an
        utterance without live stays) becomes the lowest float, which -inf misses as it misses
        any finite bound."""
        st, xp = self.options, self.xp
        if self.words is None or st.beam_prune_logp == NEG_INF:
            return None, None
        best = xp.segment_max(stay_score, u, self.n_utt)
        return best, xp.maximum(best - self.max_word_gain + st.beam_prune_logp, _LOWEST)

    def _ragged_candidates(self, cell: Any, lo: int) -> tuple[Any, Any, Any, Any]:
        """A ragged step's candidates of every beam: (src, tok, lp) (E,) beam column, label and
        ln p, beam by beam, each beam's labels in order (what the dense block's row-major live
        cells give), and (n,) where each beam's entries start. cell: (2, n) each beam's
        utterance's candidate count and start in the step's block; lo: where that block is."""
        xp = self.xp
        count = cell[0]
        first = xp.cumsum(count)
        e = int(xp.item(first[-1])) if len(first) else 0
        first = first - count
        src = xp.repeat_range(count)
        at = self._range(e) + xp.take(cell[1] - first, src)
        at += lo
        return src, xp.take(self.cand_tok, at), xp.take(self.cand_lp, at), first

    def _plain_ragged_extensions(self, f: Any, i: Any, tot: Any, pb_rep: Any, stay_pb: Any,
                                 stay_pnb: Any, src: Any, tok: Any, lp: Any, first: Any
                                 ) -> tuple[Any, ...]:
        """_plain_extensions on a ragged step: the same arithmetic on the live candidates only.
        Merging: a live beam B with parent column P and last label c receives P + c, which is
        P's entry of the same rank as B's own entry for c (one utterance, one list of labels)."""
        xp = self.xp
        n, e = f.shape[1], len(src)
        is_rep = tok == xp.take(i[LAST], src)
        base = xp.empty(e + 1, xp.float64)   # one slot more: where non-merges point
        base[:e] = xp.where(is_rep, xp.take(pb_rep, src), xp.take(tot, src))
        base[:e] += lp
        base[e] = NEG_INF
        rep = xp.flatnonzero(is_rep)
        owner = xp.take(src, rep)
        parent = xp.take(i[PARENT], owner)
        at = xp.full(n, e, xp.int64)
        at[owner] = xp.where(parent >= 0, xp.take(first, xp.maximum(parent, 0)) + rep
                             - xp.take(first, owner), e)
        stay_pnb = xp.logaddexp(stay_pnb, xp.take(base, at))   # logaddexp(x, -inf) == x
        base[at] = NEG_INF
        stay_score = self._stay_score(f, stay_pb, stay_pnb)
        best = bound = None
        ext = base[:e]
        if e >= EARLY_PRUNE_MIN_CANDIDATES:
            best, bound = self._early_bound(stay_score, i[UTT])
        if bound is not None:
            live = ext + xp.take(f[LM], src) >= xp.take(xp.take(bound, i[UTT]), src)
        else:
            live = ext > NEG_INF
        sel = xp.flatnonzero(live)
        return (xp.take(src, sel), xp.take(tok, sel), xp.take(ext, sel), stay_pnb, stay_score,
                best)

    def _general_extensions(self, f: Any, i: Any, u: Any, tot: Any, pb_rep: Any, stay_pb: Any,
                            stay_pnb: Any, src: Any, tok: Any, lp: Any, xoff: Any
                            ) -> tuple[Any, Any, Any, Any, Any]:
        """Extensions with a hard lexicon or homophone forks, whose candidates differ per beam:
        (src, tok, base, stay_pnb with the merged ones added, homophone choice or None).
        src, tok, lp: (E,) the frame's candidates of every beam (beam column, label, ln p)."""
        xp, st = self.xp, self.options
        n = f.shape[1]
        choice = None
        if self.hard:
            words = self.words
            assert words is not None
            floor = words.hard_floor - tot - f[LM]
            if st.beam_prune_logp > NEG_INF:  # relative to the best stay of the utterance
                pre = xp.logaddexp(stay_pb, stay_pnb) + f[LM] + f[PART]
                floor += xp.take(xp.segment_max(pre, u, self.n_utt), u)
            # (the lexicon's candidates read xf: in hard lexicon mode nothing is pruned)
            src, tok, lp = words.hard_candidates(src, tok, lp, i[WNODE], xoff, floor, self.xf)
        if self.forks:
            assert self.words is not None
            src, tok, lp, choice = self.words.fork_homophones(src, tok, lp, i[WNODE])
        if not len(src):
            return src, tok, lp, stay_pnb, choice
        last = i[LAST]
        # base: tot of the source beam, or its pb when the label repeats its last label
        pick = xp.concat((tot, pb_rep))
        rep_src = (tok == xp.take(last, src)) * n
        rep_src += src
        base = xp.take(pick, rep_src) + lp
        # Merge into live beams: A + c is the live B whose parent is A and whose last is c
        # (with homophone forks: and whose choice is the same). Keys are shifted by one row
        # so that parentless beams (-1) land in a row never asked.
        wm = self.merge_width
        if len(self._merge_buf) < (n + 1) * wm:
            self._merge_buf = xp.full(2 * (n + 1) * wm, -1, xp.int64)
        mb = self._merge_buf
        pkeys = i[PARENT] * wm
        q = src * wm
        if choice is None:
            pkeys += last
            q += tok
        else:  # choice c > 0 of a word is its own column after the sentinel
            pkeys += xp.where(i[CHOICE] > 0, self.vocab_size + i[CHOICE], last)
            q += xp.where(choice > 0, self.vocab_size + choice, tok)
        pkeys += wm
        mb[pkeys] = self._range(n)
        q += wm
        target = xp.take(mb, q)
        mb[pkeys] = -1
        merged = xp.flatnonzero(target >= 0)
        if len(merged):
            t = xp.take(target, merged)
            stay_pnb[t] = xp.logaddexp(xp.take(stay_pnb, t), xp.take(base, merged))
            base[merged] = NEG_INF
        sel = xp.flatnonzero(base > NEG_INF)
        src, tok, base = xp.take(src, sel), xp.take(tok, sel), xp.take(base, sel)
        if choice is not None:
            choice = xp.take(choice, sel)
        return src, tok, base, stay_pnb, choice

    def prune(self, pool: Beams, n_stays: int, stay_score: Any, stay_best: Any,
              finish_from: int | None = None) -> tuple[Beams, Beams | None]:
        """Threshold and beam-width pruning of stays + extensions: (the live beams, the beams of
        slots >= finish_from split off, or None). stay_score: (n_stays,) scores of the stays
        (already computed); stay_best: their best per utterance, or None."""
        xp, st = self.xp, self.options
        f, i = pool.f, pool.i
        total = f.shape[1]
        if total > n_stays:
            # an extension has pb = -inf, and logaddexp(-inf, x) == x exactly
            ext = f[PNB, n_stays:]
            if self.words is not None:
                ext = ext + f[LM, n_stays:]
                ext += f[PART, n_stays:]
            score = xp.concat((stay_score, ext))
        else:
            score = stay_score
        u = i[UTT]
        if st.beam_prune_logp > NEG_INF:
            if stay_best is not None:
                best = stay_best
                xp.segment_max_into(best, u[n_stays:], score[n_stays:])
            else:
                best = xp.segment_max(score, u, self.n_utt)
            # a threshold of -inf (no live beam) becomes the lowest float: -inf scores miss it
            keep = score >= xp.take(xp.maximum(best + st.beam_prune_logp, _LOWEST), u)
        else:
            keep = score > NEG_INF
        sel = xp.flatnonzero(keep)
        if len(sel) > st.beam_width:
            us = xp.take(u, sel)
            counts = xp.bincount(us, minlength=self.n_utt)
            if int(xp.amax(counts)) > st.beam_width:
                # the best beam_width of each utterance holding more: sort only their entries,
                # by utterance then score (stable: equal scores keep pool order)
                cut = sel[xp.take(counts, us) > st.beam_width]
                top = xp.segment_top(xp.take(score, cut), xp.take(u, cut), counts,
                                     st.beam_width)
                kept = xp.zeros(len(cut), xp.bool_)
                kept[top] = True
                keep[cut] = kept   # the rest of those utterances' entries are dropped
                sel = xp.flatnonzero(keep)   # still in pool order
        out = Beams(xp.take(f, sel, 1), xp.take(i, sel, 1))   # (pool.take, inlined)
        j = xp.count_below(sel, n_stays)   # sel is sorted: stays first
        if j < len(sel):  # surviving extensions get prefix nodes
            ie = out.i[:, j:]
            ie[NODE] = self.nodes.add(ie[LAST:HASH + 1], ie[WORD] if self.words_out else None,
                                      self.progress)
        done = None
        if finish_from is not None:   # finished utterances leave (their beams' parents are theirs)
            last_step = out.i[UTT] >= finish_from
            done = out.take(xp, xp.flatnonzero(last_step))
            live = xp.flatnonzero(~last_step)
            out, sel = out.take(xp, live), xp.take(sel, live)
        # new position of each pool row (a buffer of -1s, restored after use); parent -1 reads
        # its last entry, -1
        if len(self._newpos) <= total:
            self._newpos = xp.full(2 * total + 2, -1, xp.int64)
        newpos = self._newpos
        newpos[sel] = self._range(len(sel))
        out.i[PARENT] = xp.take(newpos, out.i[PARENT])
        newpos[sel] = -1
        return out, done
