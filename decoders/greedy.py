"""Greedy (best path) CTC decoding: argmax per frame, collapse repeats, drop blanks.

Vectorized over a whole batch: utterances are padded into one (B, T_max, V) array.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.decoders.base import Decoder, register
from ctclab.decoders.confidence import with_frame_confidence
from ctclab.decoders.options import GreedyOptions
from ctclab.decoders.timestamps import word_timestamps

# Utterances padded together per batch; bounds the padded array at ~BATCH * T_max * V floats.
GREEDY_BATCH_UTTERANCES = 64


@register("greedy")
class GreedyDecoder(Decoder[GreedyOptions]):
    """Best-path decoding. score = sum over frames of the max log-prob (the best path's log-prob).

    Unused labels (tokenizer specials) are never on the path: the argmax is over the others.
    """

    Options = GreedyOptions

    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        x = self._check(log_probs)
        return self.decode_padded(x[None], np.array([len(x)]))[0]

    def _decode_chunk(self, emissions: Sequence[np.ndarray],
                      on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        out: list[Hypothesis] = []
        for start in range(0, len(emissions), GREEDY_BATCH_UTTERANCES):
            part = [self._check(e) for e in emissions[start:start + GREEDY_BATCH_UTTERANCES]]
            lengths = np.array([len(e) for e in part], dtype=np.int64)
            padded = np.zeros((len(part), int(lengths.max(initial=0)), self.vocab.size), np.float32)
            for i, e in enumerate(part):
                padded[i, : len(e)] = e
            out.extend(self.decode_padded(padded, lengths))
            if on_done:
                on_done(len(part))
        return out

    def decode_padded(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[Hypothesis]:
        """Decode a batch at once.

        log_probs: (B, T_max, V) float32, frames past each length ignored.
        lengths: (B,) int, valid frames per utterance.
        """
        batch, t_max, _ = log_probs.shape
        if t_max == 0:
            return [Hypothesis.empty() for _ in range(batch)]
        if self.vocab.unused:  # the best path over labels the model may emit (as the beams do)
            cols = np.setdiff1d(np.arange(self.vocab.size), list(self.vocab.unused))
            best = cols[log_probs[..., cols].argmax(axis=2)]               # (B, T)
        else:
            best = log_probs.argmax(axis=2)                                # (B, T)
        best_lp = np.take_along_axis(log_probs, best[..., None], axis=2)[..., 0]
        valid = np.arange(t_max)[None, :] < lengths[:, None]               # (B, T)
        scores = np.where(valid, best_lp, 0.0).sum(axis=1)
        changed = np.ones_like(valid)
        changed[:, 1:] = best[:, 1:] != best[:, :-1]                       # start of a run
        keep = valid & changed & (best != self.vocab.blank)
        # End of each run: the next run's start (or the utterance length).
        run_start = valid & changed
        confident = self.options.word_confidence
        hyps = []
        for b in range(batch):
            starts_all = np.flatnonzero(run_start[b])
            ends_all = np.append(starts_all[1:], lengths[b])
            kept = keep[b, starts_all]
            tokens = best[b, starts_all[kept]]
            words = word_timestamps(tokens, starts_all[kept], ends_all[kept], self.vocab,
                                    self.frame_shift_s,
                                    log_probs[b, : lengths[b]] if confident else None)
            score = float(scores[b])
            hyp = Hypothesis(text=" ".join(w.word for w in words), score=score,
                             tokens=tuple(int(t) for t in tokens), words=words,
                             acoustic_score=score, lm_score=0.0)
            # greedy's word confidence is its frame posterior (no alternatives to weigh)
            hyps.append(with_frame_confidence(hyp) if confident else hyp)
        return hyps
