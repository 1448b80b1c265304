"""The array engine of the ``beam`` decoder: CTC prefix beam search over a batch of utterances.

All live beams of all utterances of a batch sit in two packed arrays (one column per beam,
decoders.search_state), in an array namespace (ctclab.core.arrays): numpy on the CPU, or torch
on the CPU or a GPU, the same code. A search is:

1. the schedule (decoders.search_schedule, numpy on the host): which frames need a search step;
   the others are folded in closed form, exactly (blank frames, runs of one label);
2. the steps (decoders.search_step): each advances every utterance of the batch by one of its
   steps, in a fixed number of array operations whatever the batch size; words are scored as
   they finish (decoders.search_words over decoders.lm_fusion, the LM in the same namespace);
3. the end (decoders.search_finish): final word and ``</s>`` scores, beams of one text merged,
   n-best, words with timestamps (numpy on the host).

The number of steps of a batch is its longest utterance's step count; the cost of a step is a
fixed number of calls plus work linear in the live beams. So on a CPU the batch is as large as
memory allows, of utterances of similar length (the decoder sorts them), and on a GPU thousands
of utterances share each step (decoders/constants.py, batch sizes).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctclab.core.arrays import NUMPY, Arrays, on_gpu
from ctclab.core.hypothesis import Hypothesis
from ctclab.core.validation import masses_look_valid
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_finish import Finish, concat_beams
from ctclab.decoders.search_schedule import (
    FrameStats,
    batch_frame_stats,
    concat_emissions,
    make_schedule,
)
from ctclab.decoders.search_state import (
    CTX,
    INT_ROWS,
    LAST,
    NODE,
    PARENT,
    PNB,
    SCORED_INT_ROWS,
    UTT,
    WORD,
    WORD_INT_ROWS,
    Beams,
    Nodes,
    SearchMemory,
)
from ctclab.decoders.search_step import Stepper
from ctclab.decoders.search_words import SearchWords

NEG_INF = float("-inf")


class BatchSearch:
    """One search over a batch of validated (T_i, V) float32 log-prob arrays, with the ``beam``
    decoder's (validated) options: beam_width, token_min_logp, token_top_k, beam_prune_logp,
    blank_skip_threshold and nbest are read here; the word options went into ``scorer``, whose
    arrays live in ``xp`` (the namespace the search runs in)."""

    def __init__(self, emissions: Sequence[np.ndarray], vocab: Vocabulary,
                 options: BeamOptions, scorer: WordScorer | None, frame_shift_s: float,
                 xp: Arrays = NUMPY, memory: SearchMemory | None = None):
        """memory: the host buffers this search may use (the emissions' concatenation, the
        numpy node table), not taken by another search until this one's run() returns; None:
        fresh allocations."""
        self.vocab, self.options, self.frame_shift_s, self.xp = vocab, options, frame_shift_s, xp
        self.memory = memory
        # the emissions concatenated, then the sentinel row the steps read past a last frame
        self.padded, self.lengths = concat_emissions(emissions, vocab.size, memory)
        self.x = self.padded[:-1]   # (sum T_i, V)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        active = scorer is not None and scorer.active
        if active and scorer is not None and scorer.xp is not xp:
            raise ValueError(f"the word scorer's arrays live in {scorer.xp.name}, the search in "
                             f"{xp.name}: build both for one device")
        self.words = SearchWords(scorer, vocab, xp, options.beam_prune_logp) \
            if active and scorer is not None else None
        self.words_out = self.words is not None and self.words.words_out
        self._frames: FrameStats | None = None

    def frames(self) -> FrameStats:
        """The batch's frame statistics (made once: the schedule and validation read them)."""
        if self._frames is None:
            self._frames = batch_frame_stats(self.x, self.vocab, self.options)
        return self._frames

    def values_look_valid(self) -> bool:
        """What validate_log_probs checks on the values, for the whole batch at once (False:
        some utterance fails; validate_log_probs on each names it)."""
        frames = self.frames()
        return masses_look_valid(frames.top, frames.mass)

    def run(self) -> list[list[Hypothesis]]:
        """Search every utterance; per utterance its hypotheses, best first (>= 1)."""
        xp, vocab = self.xp, self.vocab
        words = self.words
        # ragged candidate steps: measured on the CPU; on a GPU the dense blocks' extra cells
        # cost little next to the ragged layout's extra kernel launches and a device sync
        sched = make_schedule(self.padded, self.lengths, vocab, self.options,
                              words is not None and words.hard, ragged=not on_gpu(xp),
                              frames=self.frames())
        n_utt = len(self.lengths)
        tables = {"tab_i": xp.asarray(sched.tab_i), "tab_f": xp.asarray(sched.tab_f),
                  "xf": xp.asarray(sched.xf), "cand_tok": xp.asarray(sched.cand_tok),
                  "cand_lp": xp.asarray(sched.cand_lp), "cand_cell": xp.asarray(sched.cand_cell)}
        delim = vocab.delimiter
        # room for a few dozen prefix nodes per step frame (grown when more)
        nodes = Nodes(xp, self.words_out, -1 if delim is None else delim,
                      capacity=32 * int(sched.steps.sum()) + 4096, memory=self.memory)
        n_int = WORD_INT_ROWS if self.words_out else SCORED_INT_ROWS if words is not None \
            else INT_ROWS
        stepper = Stepper(xp, tables, sched, self.options, n_int, delim, vocab.size, words,
                          nodes)
        start_ctx = words.scorer.start_context if words is not None else 0
        root_last = delim if delim is not None else vocab.size

        def roots(utts: np.ndarray) -> Beams:
            n = len(utts)
            f = xp.zeros((stepper.n_float, n), xp.float64)
            f[PNB] = NEG_INF
            i = xp.zeros((n_int, n), xp.int64)
            i[UTT] = xp.asarray(sched.slot[utts])   # beams carry their utterance's slot
            i[LAST], i[NODE], i[PARENT] = root_last, 0, -1
            if words is not None:
                i[CTX] = start_ctx
            if self.words_out:
                i[WORD] = -1
            return Beams(f, i)

        finished: list[Beams] = [roots(np.flatnonzero(sched.steps == 0))]
        beams = roots(np.flatnonzero(sched.steps > 0))
        # The utterances whose last step is s are slots U_{s+1} .. U_s - 1 (slots go by step
        # count, most first): after that step their beams leave the search, split off in its
        # pruning.
        after = np.append(sched.rows[1:], 0).tolist()   # U_{s+1}
        for s, here in enumerate(sched.rows.tolist()):
            beams, done = stepper.step(s, beams, after[s] if after[s] < here else None)
            if done is not None:
                finished.append(done)
        end = Finish(xp, vocab, words, sched, nodes, self.x, self.offsets, self.options.nbest,
                     self.frame_shift_s, self.options.word_confidence)
        return end.hypotheses(concat_beams(xp, finished), n_utt)
