"""Which frames the beam search steps through, and what each step reads: made once per batch,
in numpy on the host, before the search (which may run on another device).

A frame is *active* when token pruning leaves a usable non-blank label in it (and blank is not
near-certain, ``blank_skip_threshold``). Every other frame only adds blank mass: it is folded in
closed form into the next step (``gap``) or into the end (``trail``).

Active frames that cannot change which beams live are folded too (*runs*), exactly. After a
frame whose only usable label is c (blank included in "usable"), every surviving beam ends in c
with no blank-ending mass (pb = -inf), so in the next frame, when its usable labels are c and
at most blank:
- no extension exists: c after c needs a blank between, and no other label is usable;
- every beam moves alike: pnb += ln p(c), pb = pnb + ln p(blank) (from pb = -inf).
So all scores shift by one amount, no beam is pruned that was not before, and the frame needs no
search step; a chain of such frames is summed. Real emissions hold long runs (a letter spanning
several frames): ~30% of active frames fold, and the longest utterance of the real set needs 243
steps instead of 350. Runs are not folded in hard lexicon mode, whose beams extend by lexicon
children whatever their frame probability.

Per (step, utterance) the tables hold the step's frame and what happened since the last step:
the blank mass of skipped frames, a folded run, and where the run leaves each beam's last label.
The extension candidates of step s are a dense (U_s, K_s) block, K_s the most any utterance
has in that step (real emissions: 1-2), padded with the sentinel label V (ln p -inf): a beam reads
its utterance's row with one gather, and no per-beam offsets are computed. Where that block would
be mostly padding (one noisy frame among hundreds of utterances sets K_s for all), the step is
*ragged*: each slot's candidates in turn, unpadded, with per-slot counts and starts
(decoders/constants.py, RAGGED_MIN_CELLS). Rows are *slots*:
the utterances ordered by step count, most first, so that the U_s utterances still searching at
step s are the first U_s rows, and the per-(step, utterance) tables hold U_s columns at step s
too (a (steps, utterances) table held ~10x more cells, mostly of finished utterances, on the
long batches of a LibriSpeech-like corpus). Beams carry their slot as UTT; the end maps slots back.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctclab.core.arrays import NUMPY
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.constants import RAGGED_MIN_CELLS, RAGGED_MIN_PADDING
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_state import SearchMemory

NEG_INF = -math.inf

# Rows of the per-(step, utterance) integer table ``tab_i`` (step s: its columns tab_col[s] ..
# tab_col[s] + U_s - 1, one per slot):
XOFF, AR, RUN_END = range(3)
# xoff: offset of the step's frame in ``xf`` (frame * V: xf is the batch's emissions, flat);
# ar: its active index (what END records); run_end: the active index a folded run leaves as
# every beam's END (-1: no run).
# Rows of the float table ``tab_f``:
GAP, BLANK, RUN_B, RUN_NB, GAP_KEEP, GAP_TAKE, FLOOR = range(7)
# gap: ln blank mass of the skipped frames (plus a folded run's total mass when both happened);
# blank: ln p(blank) of the step's frame (-inf when pruned); run_b / run_nb: a folded run right
# before the step (no gap after it) sets pb = pnb + run_b and pnb += run_nb (else -inf and 0);
# gap_keep / gap_take: -inf / -0.0 where blank frames were skipped before the step (all mass
# moves to blank), -0.0 / -inf elsewhere: added to a beam's (pb, pnb) and its total they select
# (tot, -inf) or keep (pb, pnb) by arithmetic, exactly (x + -0.0 is x, -0.0 included), where
# two where()s cost 2.5x as much. floor: the token pruning's floor of the step's frame: a label
# whose ln prob there is below it is not usable (-inf in hard lexicon mode: every label is).


@dataclass
class Schedule:
    """The steps of one batch. Host numpy arrays; ``xf`` and the tables move to the search's
    device. A = active frames (step and folded), S = steps, U = utterances, G = step rows (sum
    of steps: the active frames not folded)."""

    act_rows: np.ndarray        # (A,) row of each active frame in the concatenated emissions
    steps: np.ndarray           # (U,) search steps of each utterance
    n_steps: int                # S = steps.max()
    slot: np.ndarray            # (U,) each utterance's column in the step blocks (what its
                                # beams carry as UTT): utterances by step count, most first
    slot_utt: np.ndarray        # (U,) the utterance of each slot
    rows: np.ndarray            # (S,) U_s: slot columns of step s's blocks, the utterances
                                # still searching at s
    tab_col: np.ndarray         # (S,) int64 first table column of step s: U_0 + .. + U_{s-1}
    tab_i: np.ndarray           # (3, sum U_s) int64 rows XOFF..RUN_END; step s's columns are
                                # tab_col[s] + slot (a beam reads its column with one gather)
    tab_f: np.ndarray           # (7, sum U_s) float64, the same layout, rows GAP..FLOOR
    any_gap: np.ndarray         # (S,) bool
    any_run: np.ndarray         # (S,) bool: some utterance has a run folded before this step
    trail: np.ndarray           # (U,) ln mass after the last step (blank frames, a final run)
    final_end: np.ndarray       # (U,) END a final folded run leaves (-1: none)
    xf: np.ndarray              # ((T + 1) * V,) float32: the emissions with their sentinel
                                # row, flat (a view, not a copy): what a step reads of its
                                # frame, unpruned (a step compares it with its FLOOR). The
                                # sentinel label V (no last label: the empty prefix without a
                                # delimiter label) reads the next row's first label: added to
                                # such a beam's ln p(non-blank), -inf, it gives -inf whatever it
                                # is. float32 as the emissions: every use adds it to a float64
                                # score (exact widening)
    cand_tok: np.ndarray        # (C,) int64 extension candidates: step s is the (U_s, K_s) block
                                # (row: slot)
                                # cand_tok[cand_off[s]:cand_off[s + 1]] (padding: V)
    cand_lp: np.ndarray         # (C,) float32 their ln probs (padding: -inf)
    cand_off: np.ndarray        # (S + 1,) int64 where each step's block starts
    cand_k: np.ndarray          # (S,) int64 K_s
    cand_ragged: np.ndarray     # (S,) bool: step s's block is ragged: the candidates of each slot
                                # in turn, unpadded (its size is the step's live candidates)
    cand_cell: np.ndarray       # (2, sum U_s) int64, laid out as tab_i: per (step, slot) its
                                # candidate count and where they start in the step's block
                                # (read when the step is ragged)


def make_schedule(padded: np.ndarray, lengths: np.ndarray, vocab: Vocabulary,
                  options: BeamOptions, hard: bool, ragged: bool = True,
                  frames: FrameStats | None = None) -> Schedule:
    """The schedule of a batch. padded: (sum T_i + 1, V) C-contiguous float32, the concatenated
    log-probs and a sentinel row of -inf (concat_emissions); lengths: (U,).
    ragged: steps may use the ragged candidate layout (else every step is dense).
    frames: batch_frame_stats of padded[:-1], when the caller has them already."""
    if padded.ndim != 2 or len(padded) < 1 or not padded.flags.c_contiguous \
            or not np.isneginf(padded[-1]).all():
        raise ValueError("make_schedule takes the emissions as concat_emissions gives them: "
                         "C-contiguous, a row of -inf after the last frame")
    x = padded[:-1]
    st = options
    n_utt, width = len(lengths), vocab.size
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # Token pruning: in each frame a label is usable when its ln prob is >= token_min_logp or it
    # is the frame's best label (unused specials never are). A frame is active when an emitting
    # label is usable: its best emitting label reaches token_min_logp or beats blank.
    emit = emitting_labels(vocab)
    min_logp = f32_at_least(st.token_min_logp)
    if frames is None:
        frames = batch_frame_stats(x, vocab, st)
    blank32 = frames.blank
    blank = blank32.astype(np.float64)
    # Blank mass of frame ranges [a, b) from prefix sums; a -inf blank (p = 0, valid input)
    # would make the differences NaN, so such frames are counted apart and give -inf. Each
    # utterance sums from its own start (its entries sit at frame + utterance index), so its
    # scores do not depend on the batch it is decoded in, to the last bit.
    impossible = np.isneginf(blank)
    finite_blank = np.where(impossible, 0.0, blank)
    cum = np.zeros(len(blank) + n_utt)
    for u, (a, n) in enumerate(zip(offsets.tolist(), lengths.tolist(), strict=True)):
        np.cumsum(finite_blank[a:a + n], out=cum[a + u + 1:a + u + 1 + n])
    cum_impossible = np.concatenate([[0], np.cumsum(impossible)])

    def blank_mass(u: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """ln blank mass of frames [a, b) of utterance u (concatenated frame indices)."""
        return np.where(cum_impossible[b] > cum_impossible[a], NEG_INF, cum[b + u] - cum[a + u])

    # (float32 comparisons with the thresholds rounded up to float32: exact, see f32_at_least)
    emit_max = frames.emit_max
    active = (emit_max >= min_logp) | (emit_max >= blank32)
    if st.blank_skip_threshold is not None:
        active &= blank32 < f32_at_least(math.log(st.blank_skip_threshold))
    rows = np.flatnonzero(active)
    n_rows = len(rows)
    utt = np.repeat(np.arange(n_utt), lengths)[rows]

    # Runs (module docstring): row j folds when row j - 1 is the frame before it, in the same
    # utterance, with one usable label c (blank not usable), and row j's usable labels are c and
    # at most blank. From the frame statistics: a row's sole usable label is its label sum, and
    # with one usable label besides blank, that label is the sum less blank's id if usable.
    n_usable = frames.n_usable[rows]
    label_sum = frames.label_sum[rows]
    blank_ok = frames.blank_ok[rows]
    fold = np.zeros(n_rows, bool)
    if not hard and n_rows > 1:
        prev_sole = label_sum[:-1]
        other = label_sum[1:] - np.where(blank_ok[1:], vocab.blank, 0)
        fold[1:] = ((rows[1:] == rows[:-1] + 1) & (utt[1:] == utt[:-1]) & (n_usable[:-1] == 1)
                    & (n_usable[1:] - blank_ok[1:] == 1)
                    & np.where(prev_sole == vocab.blank, blank_ok[1:], other == prev_sole))
    step_rows = np.flatnonzero(~fold)
    group = np.cumsum(~fold) - 1                      # the step each active row belongs to
    n_groups = len(step_rows)
    # A group's folded run: c is its step row's sole label, usable in every row of the run and
    # there its only usable label besides blank: the row's best emitting label (an active row's
    # best emitting label is usable), or blank itself.
    run_rows = np.flatnonzero(fold)
    run_group = group[run_rows]
    run_frames = rows[run_rows]
    lpc = np.where(label_sum[step_rows[run_group]] == vocab.blank, blank32[run_frames],
                   emit_max[run_frames])
    lpb = np.where(blank_ok[run_rows], blank32[run_frames], np.float32(NEG_INF))
    is_last = np.ones(len(run_rows), bool)
    is_last[:-1] = run_group[1:] != run_group[:-1]
    has_chain = np.zeros(n_groups, bool)
    has_chain[run_group] = True
    run_nb = np.bincount(run_group, lpc, minlength=n_groups).astype(np.float64)
    run_b = np.bincount(run_group, np.where(is_last, lpb, lpc),
                        minlength=n_groups).astype(np.float64)
    run_nb[~has_chain] = 0.0
    run_b[~has_chain] = NEG_INF
    # END after the run: its last frame, unless blank ends that frame at least as likely
    chain_end = np.full(n_groups, -1, np.int64)
    last_rows = run_rows[is_last]
    chain_end[run_group[is_last]] = np.where(lpc[is_last] > lpb[is_last], last_rows,
                                             last_rows - 1)
    run_total = NUMPY.logaddexp(run_b, run_nb)   # the run's mass (pb = -inf before it)

    # The token pruning applies to blank and to the last label continuing too (a step reads its
    # frame's row unpruned and compares with the floor): a path through a label that
    # improbable is dropped whatever the label (as pyctcdecode does). Without it a beam can
    # "step over" a near-certain word delimiter through a blank of p < e^-5 whenever the LM
    # dislikes the word just finished (e.g. an OOV scored at <unk>).
    # Hard lexicon: a beam inside an out-of-lexicon stretch must be able to wait (blank) or hold
    # its label however improbable, else every beam dies there: no floor.
    s_frames = rows[step_rows]
    floor = np.minimum(min_logp, np.maximum(emit_max[s_frames], blank32[s_frames]))
    s_blank = np.where(blank_ok[step_rows] | hard, blank32[s_frames], np.float32(NEG_INF))

    # Steps: the groups, numbered within their utterance.
    s_utt = utt[step_rows]
    steps = np.bincount(s_utt, minlength=n_utt)
    first = np.cumsum(steps) - steps
    step = np.arange(n_groups) - first[s_utt]
    n_steps = int(steps.max(initial=0))
    # What happened since the previous step: skipped frames after the previous active row
    # (the last row of the previous group's run, or its step row) and that group's run.
    prev_row = np.where(step_rows > 0, rows[np.maximum(step_rows - 1, 0)], -1)
    prev_row = np.where(step > 0, prev_row, offsets[s_utt] - 1)
    gap_now = s_frames > prev_row + 1
    gap = blank_mass(s_utt, prev_row + 1, s_frames)
    prev_group = np.maximum(np.arange(n_groups) - 1, 0)
    prev_chain = (step > 0) & has_chain[prev_group]
    gap = np.where(prev_chain & gap_now, gap + run_total[prev_group], gap)
    has_run = prev_chain & ~gap_now
    # Slots: the utterances by step count, most first (stable), so that the U_s utterances still
    # searching at step s (steps > s) are slots 0 .. U_s - 1 and the tables hold only them.
    slot_utt = np.argsort(-steps, kind="stable")
    slot = np.empty(n_utt, np.int64)
    slot[slot_utt] = np.arange(n_utt)
    step_cols = n_utt - np.cumsum(np.bincount(steps, minlength=n_steps + 1))[:n_steps]
    s_slot = slot[s_utt]
    tab_col = np.cumsum(step_cols) - step_cols
    # Every cell is written once: the U_s columns of step s are the utterances with a step row
    # there. The rows are filled in column order (one permutation, then sequential writes).
    cell = tab_col[step] + s_slot      # the column of each step row
    by_cell = np.empty(n_groups, np.int64)
    by_cell[cell] = np.arange(n_groups)
    run_end = np.where(prev_chain, chain_end[prev_group], -1)
    tab_i = np.empty((3, n_groups), np.int64)
    tab_f = np.empty((7, n_groups), np.float64)
    tab_i[XOFF] = s_frames[by_cell] * width
    tab_i[AR] = step_rows[by_cell]
    tab_i[RUN_END] = run_end[by_cell]
    gap_cell = gap_now[by_cell]
    tab_f[GAP_KEEP] = np.where(gap_cell, NEG_INF, -0.0)
    tab_f[GAP_TAKE] = np.where(gap_cell, -0.0, NEG_INF)
    tab_f[GAP] = np.where(gap_now, gap, 0.0)[by_cell]
    tab_f[BLANK] = s_blank[by_cell]
    tab_f[RUN_B] = np.where(has_run, run_b[prev_group], NEG_INF)[by_cell]
    tab_f[RUN_NB] = np.where(has_run, run_nb[prev_group], 0.0)[by_cell]
    tab_f[FLOOR] = NEG_INF if hard else floor[by_cell]
    any_gap = np.bincount(step, gap_now, minlength=n_steps) > 0
    any_run = np.bincount(step, run_end >= 0, minlength=n_steps) > 0
    # After the last step: its run, then the blank frames to the end.
    last_group = np.where(steps > 0, first + steps - 1, 0)
    rows_per_utt = np.bincount(utt, minlength=n_utt)
    last_index = np.maximum(np.cumsum(rows_per_utt) - 1, 0)
    ends_at = np.where(rows_per_utt > 0, rows[last_index] if n_rows else 0, offsets - 1)
    trail = blank_mass(np.arange(n_utt), ends_at + 1, offsets + lengths)
    final_chain = (steps > 0) & has_chain[last_group] if n_groups else np.zeros(n_utt, bool)
    final_end = np.full(n_utt, -1, np.int64)
    if n_groups:
        trail = np.where(final_chain, trail + run_total[last_group], trail)
        final_end = np.where(final_chain, chain_end[last_group], -1)

    # Extension candidates of the steps: usable labels, at most token_top_k of them per frame,
    # stored by step, then utterance (a step reads one stretch).
    groups, counts = _candidates(x, s_frames, floor, frames, emit, vocab.blank, st.token_top_k)
    cand_k = np.zeros(n_steps, np.int64)
    np.maximum.at(cand_k, step, counts)
    live = np.bincount(step, counts, minlength=n_steps).astype(np.int64)
    dense_cells = cand_k * step_cols
    cand_ragged = np.zeros(n_steps, bool)
    if ragged:   # steps whose dense blocks would be mostly padding (decoders/constants.py)
        cand_ragged = (dense_cells >= RAGGED_MIN_CELLS) & (dense_cells > RAGGED_MIN_PADDING * live)
    cand_off = np.zeros(n_steps + 1, np.int64)
    np.cumsum(np.where(cand_ragged, live, dense_cells), out=cand_off[1:])
    # per (step, slot) cell: its candidate count and where they start in the step's block
    # (ragged steps; laid out as tab_i)
    cell_count = np.zeros(n_groups, np.int64)
    cell_count[cell] = counts
    before = np.cumsum(cell_count) - cell_count
    cell_begin = before - before[tab_col][np.repeat(np.arange(n_steps), step_cols)]
    cand_cell = np.stack([cell_count, cell_begin])
    cand_tok = np.full(int(cand_off[-1]), vocab.size, np.int64)
    cand_lp = np.full(int(cand_off[-1]), NEG_INF, np.float32)
    for r, tok, lp, rank in groups:
        r_step = step[r]
        pos = cand_off[r_step] + np.where(cand_ragged[r_step], cell_begin[cell[r]],
                                          s_slot[r] * cand_k[r_step])
        if rank is not None:
            pos += rank
        cand_tok[pos] = tok
        cand_lp[pos] = lp
    return Schedule(
        act_rows=rows, steps=steps, n_steps=n_steps, slot=slot,
        slot_utt=slot_utt, rows=step_cols,
        tab_col=tab_col, tab_i=tab_i,
        tab_f=tab_f, any_gap=any_gap, any_run=any_run, trail=trail, final_end=final_end,
        xf=padded.reshape(-1), cand_tok=cand_tok, cand_lp=cand_lp, cand_off=cand_off,
        cand_k=cand_k, cand_ragged=cand_ragged, cand_cell=cand_cell)


def _candidates(x: np.ndarray, s_frames: np.ndarray, floor: np.ndarray, frames: FrameStats,
                emit: np.ndarray, blank: int, top_k: int | None
                ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
                           np.ndarray]:
    """The extension candidates of the step rows (their frames s_frames (G,) in x, floors (G,)
    float32; frames: x's frame statistics): usable emitting labels, at most top_k of them per
    frame. Returns groups of candidates, each (r, tok, lp, rank): (C,) their step rows, labels,
    ln probs (float32) and ranks among their rows' candidates in label order (None: all 0),
    and (G,) the candidate count of each step row.

    Most step rows hold one candidate (71% on a LibriSpeech-sized synthetic corpus): it is
    the frame's best emitting label (an active frame's best emitting label is usable), named
    by the frame statistics' label sum, so only rows of several candidates are read again
    (reading every step row cost a third of a schedule)."""
    size = x.shape[1]
    blank_ok = frames.blank_ok.take(s_frames)
    # (the usable labels less blank, as the frame statistics counted them)
    counts = frames.n_usable.take(s_frames).astype(np.int64) - blank_ok
    if top_k is not None and top_k < size:   # every row may lose labels: all read again
        several = np.arange(len(s_frames))
    else:
        several = np.flatnonzero(counts > 1)
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    if len(several) < len(s_frames):
        sole = np.flatnonzero(counts == 1)
        sole_frames = s_frames.take(sole)
        # the usable labels' id sum less blank's (exact: at most two summed)
        tok_sole = frames.label_sum.take(sole_frames).astype(np.int64)
        tok_sole -= blank * blank_ok.take(sole)
        groups.append((sole, tok_sole, frames.emit_max.take(sole_frames), None))
    sub = x.take(s_frames.take(several), axis=0)
    mask = sub >= floor.take(several)[:, None]
    mask &= emit
    if top_k is not None and top_k < size and len(sub):
        kth = -np.partition(-sub, top_k - 1, axis=1)[:, top_k - 1]
        mask &= sub >= kth[:, None]
        counts = np.count_nonzero(mask, axis=1)
    flat = np.flatnonzero(mask)
    r_sev, tok_sev = np.divmod(flat, size)   # by row, then label
    sev_counts = counts.take(several)
    rank_sev = np.arange(len(r_sev)) - (np.cumsum(sev_counts) - sev_counts)[r_sev]
    groups.append((several.take(r_sev), tok_sev, sub.reshape(-1).take(flat), rank_sev))
    return groups, counts


# Frames transposed at a time for column reductions: 4096 x ~30 float32 stay in the L2 cache.
_BLOCK_FRAMES = 4096


@dataclass
class FrameStats:
    """Per frame of x (T,): what token pruning and run folding need, from one pass over x."""

    emit_max: np.ndarray     # (T,) float32 best emitting ln prob (-inf: no emitting label)
    blank: np.ndarray        # (T,) float32 ln p(blank)
    n_usable: np.ndarray     # (T,) usable labels, blank included (count_dtype)
    label_sum: np.ndarray    # (T,) sum of the usable labels' ids (count_dtype): read only where
                             # at most two labels are usable (the sole one, or blank and one),
                             # so it is exact there whatever the wrap-around elsewhere
    blank_ok: np.ndarray     # (T,) bool blank is usable
    # What input validation reads (core.validation.masses_look_valid), from the same pass:
    mass: np.ndarray         # (T,) float32 sum of the frame's probabilities (exp of its row)
    top: float               # the largest ln prob of all frames (NaN if any is NaN; -inf: T = 0)


def frame_stats(x: np.ndarray, emit: np.ndarray, blank: int, min_logp: np.float32
                ) -> FrameStats:
    """The statistics of each frame of x (T, V) under token pruning: a label is usable when its
    ln prob is >= the frame's floor, min(min_logp, its best emitting-or-blank ln prob); emit:
    (V,) emitting labels (with blank, the labels that can be usable at all).

    Transposed a block at a time: a reduction down ~30 contiguous rows is vectorised in numpy
    where one along 30-wide rows is not, and a whole transposed copy would leave the caches
    (4x slower). The counts and label sums are one small product of the usable mask, by einsum
    in 16-bit integers (2-2.7x faster than in float32 at V = 29 and 191), not a matrix product:
    that calls BLAS, whose threads took both cores and cost more than they saved on the hama
    phonemes (V = 191). The validation's row masses and maximum come from the same transposed
    blocks (a pass of their own over the emissions cost twice as much)."""
    n, size = x.shape
    dtype = count_dtype(size)
    out = FrameStats(np.full(n, NEG_INF, np.float32), np.empty(n, np.float32),
                     np.empty(n, dtype), np.empty(n, dtype), np.empty(n, bool),
                     np.empty(n, np.float32), NEG_INF)
    tops = np.full(-(-n // _BLOCK_FRAMES), NEG_INF, np.float32)   # each block's largest value
    scratch = np.empty(min(n, _BLOCK_FRAMES) * size, np.float32)  # its exponentials
    usable_cols = emit.copy()
    usable_cols[blank] = True
    ids = np.flatnonzero(emit)
    weights = np.stack([usable_cols, usable_cols * np.arange(size)]).astype(dtype)
    emit_at: slice | np.ndarray = ids
    if len(ids) and ids[-1] - ids[0] + 1 == len(ids):   # one slice of columns (the usual case)
        emit_at = slice(int(ids[0]), int(ids[-1]) + 1)
    # (overflow: logits give inf, which the validation rejects; entered once, not per block:
    # numpy 1.x's errstate costs ~10 us a use, 5 ms over a test-clean-sized corpus)
    with np.errstate(over="ignore"):
        for a in range(0, n, _BLOCK_FRAMES):
            z = min(a + _BLOCK_FRAMES, n)
            xt = np.ascontiguousarray(x[a:z].T)            # (V, B)
            em = out.emit_max[a:z]
            if len(ids):
                np.max(xt[emit_at], axis=0, out=em)
            out.blank[a:z] = xt[blank]
            floor = np.minimum(min_logp, np.maximum(em, xt[blank]))
            usable = xt >= floor
            out.blank_ok[a:z] = usable[blank]
            counts = np.einsum("kv,vb->kb", weights, usable.astype(dtype))   # (2, B)
            out.n_usable[a:z], out.label_sum[a:z] = counts
            tops[a // _BLOCK_FRAMES] = xt.max()
            probs = np.exp(xt, out=scratch[:xt.size].reshape(xt.shape))
            np.sum(probs, axis=0, out=out.mass[a:z])
    if n:
        out.top = float(tops.max())   # (NaN when a block's is)
    return out


def emitting_labels(vocab: Vocabulary) -> np.ndarray:
    """(V,) bool: the labels a frame's pruning considers besides blank (unused specials never
    are usable)."""
    emit = np.zeros(vocab.size, bool)
    emit[vocab.emitting_ids] = True
    return emit


def batch_frame_stats(x: np.ndarray, vocab: Vocabulary, options: BeamOptions) -> FrameStats:
    """frame_stats of a batch's concatenated emissions x (T, V) under the options' token
    pruning: what make_schedule reads (and input validation, core.validation)."""
    return frame_stats(x, emitting_labels(vocab), vocab.blank,
                       f32_at_least(options.token_min_logp))


def count_dtype(size: int) -> type[np.generic]:
    """The frame statistics' integer type for V = size labels: uint16 holds any count (<= V) and
    any sum of two label ids exactly below V = 2^15; float32 (exact integers to 2^24) above."""
    return np.uint16 if size < 2**15 else np.float32


def f32_at_least(value: float) -> np.float32:
    """The least float32 >= value: for a float32 a, a >= value iff a >= it (and a < value iff
    a < it), so thresholds compare with float32 arrays without widening them."""
    with np.errstate(over="ignore"):
        f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(math.inf))
    return f


def concat_emissions(emissions: Sequence[np.ndarray], vocab_size: int,
                     memory: SearchMemory | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((sum T_i + 1, V) float32 the emissions concatenated, then a sentinel row of -inf (what
    make_schedule takes: the steps read a frame's next row); (U,) int64 lengths).

    memory: a decoder's search memory, whose "emissions" buffer they are written into (a view
    of it is returned), so that its batches reuse one allocation; None: a fresh array."""
    lengths = np.array([len(e) for e in emissions], np.int64)
    shape = (int(lengths.sum()) + 1, vocab_size)
    if memory is not None:
        padded = memory.take("emissions", shape[0] * shape[1], np.float32).reshape(shape)
    else:
        padded = np.empty(shape, np.float32)
    if len(emissions):
        np.concatenate(emissions, out=padded[:-1])
    padded[-1] = NEG_INF
    return padded, lengths
