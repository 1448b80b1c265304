"""The end of a batch search: final scores (the unfinished word, ``</s>``), beams of one text
merged into one hypothesis, the n-best per utterance, and their words with timestamps.

The scores are finished in the search's array namespace (the LM lives there); everything after
works on host copies in numpy (a few thousand beams, once per batch). A trailing delimiter is
merged away, so hypotheses are distinct texts.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ctclab.core.arrays import NUMPY, Arrays
from ctclab.core.hypothesis import Hypothesis, word_timestamps
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.confidence import token_peak_probs, word_frame_confidence
from ctclab.decoders.search_schedule import Schedule
from ctclab.decoders.search_state import (
    CTX,
    END,
    LAST,
    LM,
    NODE,
    PB,
    PNB,
    UTT,
    WNODE,
    Beams,
    Nodes,
    word_hash,
)
from ctclab.decoders.search_words import SearchWords
from ctclab.decoders.timestamps import WordSpan, word_spans

N = Nodes  # node table rows: N.PARENT, N.LABEL, ...
NAN = float("nan")


class Finish:
    """Turns the final beams of a batch into hypotheses."""

    def __init__(self, xp: Arrays, vocab: Vocabulary, words: SearchWords | None,
                 schedule: Schedule, nodes: Nodes, x: np.ndarray, offsets: np.ndarray,
                 nbest: int, frame_shift_s: float, confidence: bool = True):
        """confidence: compute the words' frame confidence (else NaN)."""
        self.xp, self.vocab, self.words, self.schedule = xp, vocab, words, schedule
        self.nodes, self.x, self.offsets = nodes, x, offsets
        self.nbest, self.frame_shift_s, self.confidence = nbest, frame_shift_s, confidence
        self.delim = vocab.delimiter
        self.starts = vocab.starts_word if vocab.word_start is not None else None
        self.words_out = words is not None and words.words_out
        # labels that are text without spaces, the delimiter a space: words cut in one pass
        texts = vocab.token_texts
        self.simple = (not self.words_out and self.starts is None and self.delim is not None
                       and texts[self.delim] == " "
                       and all(texts[t] and not any(c.isspace() for c in texts[t])
                               for t in vocab.emitting_ids if t != self.delim))
        # labels of one character each (letters; no lone surrogate, which UTF-32 cannot carry):
        # paths are spelled as code points, decoded at once (a join of a string per label cost
        # 15x more)
        one_char = all(len(texts[t]) == 1 and not "\ud800" <= texts[t] <= "\udfff"
                       for t in vocab.emitting_ids)
        self.code_points = (np.array([ord(t) if len(t) == 1 else 0 for t in texts], "<u4")
                            if one_char else None)

    def _final_scores(self, b: Beams, n_utt: int) -> tuple[Any, ...]:
        """(acoustic, lm, open word ids, dropped open words, END): in the search's namespace."""
        xp, words, sched = self.xp, self.words, self.schedule
        f, i = b.f, b.i
        utt = xp.take(xp.asarray(sched.slot_utt), i[UTT])   # beams carry slots
        end = i[END]
        if (sched.final_end >= 0).any():  # a run folded after the last step moves END
            final_end = xp.take(xp.asarray(sched.final_end), utt)
            end = xp.where(final_end >= 0, final_end, end)
        acoustic = xp.logaddexp(f[PB], f[PNB]) + xp.take(xp.asarray(sched.trail), utt)
        lm = xp.copy(f[LM]) if words is not None else xp.zeros(len(utt), xp.float64)
        open_ids = xp.full(len(utt), -1, xp.int64)  # word id of the unfinished word (words_out)
        scorer = words.scorer if words is not None else None
        if scorer is not None:  # the unfinished word is a word now; then </s>
            open_word = xp.flatnonzero(i[WNODE] > 0)
            ctx = xp.copy(i[CTX])
            if len(open_word) and self.words_out:
                assert words is not None
                delta, ctx[open_word], open_ids[open_word] = words.best_homophone(
                    xp.take(ctx, open_word), xp.take(i[WNODE], open_word))
                lm[open_word] += delta
            elif len(open_word):
                delta, ctx[open_word] = scorer.complete(xp.take(ctx, open_word),
                                                        xp.take(i[WNODE], open_word))
                lm[open_word] += delta
            lm += scorer.end(ctx)
        total = acoustic + lm
        drop_open = xp.zeros(len(utt), xp.bool_)
        bad = ~xp.isfinite(total)
        if xp.item(bad.any()):
            # Hard lexicon, and every beam of an utterance ends inside a word that is none: the
            # words before it are the text (the unfinished one is dropped), scored without it.
            valid_utt = xp.zeros(n_utt, xp.bool_)
            valid_utt[utt[~bad]] = True
            fallback = bad & ~xp.take(valid_utt, utt) & xp.isfinite(acoustic)
            lm[fallback] = f[LM][fallback] if words is not None else 0.0
            if scorer is not None:
                drop_open = fallback & (i[WNODE] > 0)
                lm[drop_open] += scorer.end(i[CTX][drop_open])
        return acoustic, lm, open_ids, drop_open, end

    def hypotheses(self, b: Beams, n_utt: int) -> list[list[Hypothesis]]:
        """Per utterance its hypotheses, best first (at least one)."""
        xp = self.xp
        acoustic, lm, open_ids, drop_open, end = (
            xp.to_numpy(a) for a in self._final_scores(b, n_utt))
        i = xp.to_numpy(b.i)
        data = self.nodes.host()
        utt, node, last = self.schedule.slot_utt.take(i[UTT]), i[NODE], i[LAST]
        total = acoustic + lm
        ok = np.flatnonzero(np.isfinite(total))
        # Beams with one text are one hypothesis: merge them, by text hash (one text can own
        # several prefix nodes), counting a trailing delimiter as no label.
        if self.words_out:  # the text is the words: hash them, the unfinished one included
            text = np.where(i[WNODE] > 0,
                            word_hash(data[N.WORDS_HASH].take(node), open_ids,
                                      data[N.PART_HASH].take(node), NUMPY),
                            data[N.WORDS_HASH].take(node))
        elif self.starts is not None:  # word pieces: several labellings read as one text
            text = np.zeros(len(node), np.int64)
            if len(ok):
                read = self.vocab.decode_tokens
                text[ok] = [hash(read(p[0])) for p in self._walk(data, node[ok], end[ok]).paths()]
        else:
            canon = node.copy()
            if self.delim is not None:
                trailing = (last == self.delim) & (node > 0)
                canon[trailing] = data[N.PARENT, node[trailing]]
            text = data[N.HASH].take(canon)
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
        chosen = ranked[rank < max(1, self.nbest)]
        return self._build(data, chosen, rep, g_total, g_acoustic, g_utt, node, end, open_ids,
                           drop_open, n_utt)

    def _build(self, data: np.ndarray, chosen: np.ndarray, rep: np.ndarray,
               g_total: np.ndarray, g_acoustic: np.ndarray, g_utt: np.ndarray,
               node: np.ndarray, end: np.ndarray, open_ids: np.ndarray, drop_open: np.ndarray,
               n_utt: int) -> list[list[Hypothesis]]:
        per_utt: list[list[Hypothesis]] = [[] for _ in range(n_utt)]
        walk = self._walk(data, node[rep[chosen]], end[rep[chosen]])
        dropped = drop_open[rep[chosen]]
        if self.simple and not dropped.any():
            self._letter_hypotheses(walk, chosen, g_total, g_acoustic, g_utt, per_utt)
        else:
            self._path_hypotheses(walk, chosen, g_total, g_acoustic, g_utt, open_ids[rep[chosen]],
                                  dropped, per_utt)
        for ut in range(n_utt):
            if not per_utt[ut]:
                per_utt[ut].append(Hypothesis.empty())
        return per_utt

    def _path_hypotheses(self, walk: Walk, chosen: np.ndarray, g_total: np.ndarray,
                         g_acoustic: np.ndarray, g_utt: np.ndarray, open_ids: np.ndarray,
                         dropped: np.ndarray, per_utt: list[list[Hypothesis]]) -> None:
        """Hypotheses path by path (word pieces, lexicon words, cut-off unfinished words)."""
        labellings, spans = [], []
        for (tokens, start_rows, end_rows, word_ids), open_id, drop in zip(
                walk.paths(), open_ids.tolist(), dropped.tolist(), strict=True):
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
                                     [(s.start, s.end) for s in flat]).tolist() \
            if self.confidence else [NAN] * len(flat)
        # frames from each utterance's start, in seconds from the table of rounded frame times
        g_chosen = g_utt[chosen]
        word_off = np.repeat(self.offsets[g_chosen], [len(ws) for ws in spans])
        n = len(flat)
        frames = np.array([s.start for s in flat] + [s.end for s in flat], np.int64)
        starts_s, ends_s, rel = frame_seconds(frames - np.concatenate([word_off, word_off]),
                                              self.frame_shift_s, n)
        words = word_timestamps([s.word for s in flat], rel[:n], rel[n:], starts_s, ends_s, conf)
        a = 0
        for ut, score, ac, tokens, ws in zip(g_chosen.tolist(), g_total[chosen].tolist(),
                                             g_acoustic[chosen].tolist(), labellings, spans,
                                             strict=True):
            z = a + len(ws)
            per_utt[ut].append(Hypothesis(
                text=" ".join([w.word for w in ws]), score=score, tokens=tuple(tokens),
                words=tuple(words[a:z]), acoustic_score=ac, lm_score=score - ac))
            a = z

    def _letter_hypotheses(self, walk: Walk, chosen: np.ndarray, g_total: np.ndarray,
                           g_acoustic: np.ndarray, g_utt: np.ndarray,
                           per_utt: list[list[Hypothesis]]) -> None:
        """Hypotheses of all paths at once, for labels that are text without whitespace and a
        delimiter that is a space: words are cut, spelled and scored by frame confidence in
        array operations (what word_spans and word_frame_confidence give, without their loops
        over labels and words)."""
        tokens, starts, ends, sizes = walk.tokens, walk.start_rows, walk.end_rows, walk.sizes
        n = len(tokens)
        bounds = np.cumsum(sizes)
        first = np.zeros(n, bool)
        last = np.zeros(n, bool)
        first[(bounds - sizes)[sizes > 0]] = True
        last[bounds[sizes > 0] - 1] = True
        letter = tokens != self.delim
        word_first = np.flatnonzero(letter & (first | np.r_[True, ~letter[:-1]]))
        word_last = np.flatnonzero(letter & (last | np.r_[~letter[1:], True]))
        w_start, w_end = starts[word_first], ends[word_last]
        owner = np.repeat(np.arange(len(sizes)), sizes)[word_first]
        counts = np.bincount(owner, minlength=len(sizes))
        conf = self._letter_confidence(tokens, letter, word_first, w_start, w_end) \
            if self.confidence else np.full(len(word_first), np.nan)
        # words spelled in one pass: all labels as one text, a space between paths
        cuts = np.concatenate([[0], bounds]).tolist()
        assert self.delim is not None   # (simple: the delimiter is a space)
        labels = np.insert(tokens, cuts[1:-1], self.delim)
        if self.code_points is not None:
            text = self.code_points.take(labels).tobytes().decode("utf-32-le")
        else:
            texts = self.vocab.token_texts
            text = "".join([texts[t] for t in labels.tolist()])
        spelled = text.split()
        word_cuts = np.concatenate([[0], np.cumsum(counts)]).tolist()
        # frames from each utterance's start, in seconds from the table of rounded frame times
        g_chosen = g_utt[chosen]
        word_off = np.repeat(self.offsets[g_chosen], counts)
        starts_s, ends_s, frames = frame_seconds(
            np.concatenate([w_start - word_off, w_end - word_off]), self.frame_shift_s,
            len(word_off))
        words = word_timestamps(spelled, frames[:len(word_off)], frames[len(word_off):],
                                starts_s, ends_s, conf.tolist())
        token_list = tokens.tolist()
        for h, (ut, score, ac) in enumerate(zip(g_chosen.tolist(), g_total[chosen].tolist(),
                                                g_acoustic[chosen].tolist(), strict=True)):
            a, z = word_cuts[h], word_cuts[h + 1]
            per_utt[ut].append(Hypothesis(
                text=" ".join(spelled[a:z]), score=score,
                tokens=tuple(token_list[cuts[h]:cuts[h + 1]]), words=tuple(words[a:z]),
                acoustic_score=ac, lm_score=score - ac))

    def _letter_confidence(self, tokens: np.ndarray, letter: np.ndarray, word_first: np.ndarray,
                           w_start: np.ndarray, w_end: np.ndarray) -> np.ndarray:
        """(W,) frame confidence of the words of _letter_hypotheses: each letter at its best
        frame within its word, the word its worst (NaN for a word without frames). tokens,
        letter: (L,) the paths' labels and which are letters; word_first: (W,) where each word
        starts in them; w_start, w_end: (W,) its rows in the emissions."""
        at = np.flatnonzero(letter)
        if not len(at):
            return np.full(len(word_first), np.nan)
        starts_word = np.zeros(len(tokens), bool)
        starts_word[word_first] = True
        word_of = np.cumsum(starts_word)[at] - 1
        peaks = token_peak_probs(self.x, tokens[at], w_start[word_of], w_end[word_of])
        first_letter = np.cumsum(letter)[word_first] - 1
        valid = (w_start >= 0) & (w_end > w_start)
        return np.where(valid, np.minimum.reduceat(peaks, first_letter), np.nan)

    def _last_word_end(self, tokens: list[int]) -> int:
        """How many labels precede the unfinished last word: up to its delimiter (or, for word
        pieces, up to its word-start piece)."""
        for k in range(len(tokens) - 1, -1, -1):
            if tokens[k] == self.delim:
                return k + 1
            if self.starts is not None and self.starts[tokens[k]]:
                return k
        return 0

    def _lexicon_spans(self, tokens: list[int], starts: list[int], ends: list[int],
                       word_ids: list[int], open_id: int) -> list[WordSpan]:
        """Words of a path whose words come from a pronunciation lexicon: each run of labels up
        to a delimiter is the word that delimiter's node recorded (an unknown one: its labels)."""
        assert self.words is not None
        word_text = self.words.scorer.word_text
        out: list[WordSpan] = []
        group: list[int] = []
        labels = self.vocab.labels

        def flush(word_id: int) -> None:
            if group:
                text = word_text[word_id] if word_id >= 0 else "".join(
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

    def _walk(self, data: np.ndarray, nodes: np.ndarray, last_end: np.ndarray) -> Walk:
        """The labels of each prefix node, first label first, with the rows where each starts and
        the row after it ends (and, words from a lexicon, the word each label's node recorded):
        one walk up the node table for all nodes, a level a step.

        data: the node table (host); nodes: (n,) prefix node ids; last_end: (n,) active index
        where each last label ended.
        """
        parent = data[N.PARENT]
        # Only the paths still below the root go on up (checked every 8 levels): a batch's
        # paths differ in length by 10x, and a (paths, longest) grid of them was mostly padding
        at, owners = [], []   # per level: the nodes reached, and whose path each is on
        cur, owner = nodes, np.arange(len(nodes))
        while len(cur):   # up to the root (node 0, the only one without a label)
            for _ in range(8):
                at.append(cur)
                owners.append(owner)
                cur = parent.take(cur)
            going = np.flatnonzero(cur > 0)
            cur, owner = cur.take(going), owner.take(going)
        level = np.arange(len(at)).repeat([len(a) for a in at])   # 0: the node itself
        reached = np.concatenate(at) if at else nodes
        whose = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        labelled = np.flatnonzero(reached > 0)
        reached, whose, level = reached.take(labelled), whose.take(labelled), level.take(labelled)
        sizes = np.bincount(whose, minlength=len(nodes))
        # path after path, first label first: the node at level k of a path of n labels is its
        # label n - 1 - k
        last = np.cumsum(sizes) - 1
        path = np.empty(len(reached), np.int64)
        path[last.take(whose) - level] = reached
        tokens = data[N.LABEL].take(path)
        start = data[N.START].take(path)
        # a label ends where the next one starts; the last one where its beam says
        end = np.empty_like(start)
        end[:-1] = data[N.PREV_END].take(path[1:])
        end[last[sizes > 0]] = last_end[sizes > 0]
        rows = self.schedule.act_rows
        words = data[N.WORD_ID].take(path) if self.words_out else None
        return Walk(tokens, rows[start], rows[end] + 1, words, sizes)


class Walk:
    """The paths of n prefix nodes, concatenated: (sum sizes,) int64 labels, first rows, rows
    after their ends, word ids (lexicon words) or None; sizes (n,)."""

    def __init__(self, tokens: np.ndarray, start_rows: np.ndarray, end_rows: np.ndarray,
                 word_ids: np.ndarray | None, sizes: np.ndarray):
        self.tokens, self.start_rows, self.end_rows = tokens, start_rows, end_rows
        self.word_ids, self.sizes = word_ids, sizes

    def paths(self) -> list[tuple[list[int], list[int], list[int], list[int]]]:
        """Per node: (labels, first rows, end rows, word ids) as lists."""
        cuts = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        tok, sr, er = self.tokens.tolist(), self.start_rows.tolist(), self.end_rows.tolist()
        wd = self.word_ids.tolist() if self.word_ids is not None else None
        return [(tok[a:b], sr[a:b], er[a:b], wd[a:b] if wd is not None else [])
                for a, b in itertools.pairwise(cuts)]


# round(frame * shift, 4) for frames 0, 1, ... per frame shift (seconds): a decode asks the same
# few thousand frames again and again, so each is rounded once per process, not once per batch
# (np.unique and a Python round per distinct frame took ~1% of a pass on the real set)
_SECONDS: dict[float, np.ndarray] = {}


def frame_seconds(frames: np.ndarray, shift: float, n: int
                  ) -> tuple[list[float], list[float], list[int]]:
    """Of (2n,) frames (n starts, then n ends): the starts and the ends in seconds, each
    ``round(frame * shift, 4)`` as Python computes it (so the floats are the same); and the
    frames as a list."""
    if not len(frames):
        return [], [], []
    if int(frames.min()) < 0:   # (not from a search; rounded one by one)
        seconds = [round(f * shift, 4) for f in frames.tolist()]
        return seconds[:n], seconds[n:], frames.tolist()
    table = _SECONDS.get(shift)
    top = int(frames.max()) + 1
    if table is None or len(table) < top:
        size = max(top, 4096, 2 * len(table) if table is not None else 0)
        table = _SECONDS[shift] = np.array([round(f * shift, 4) for f in range(size)])
    seconds = table.take(frames).tolist()
    return seconds[:n], seconds[n:], frames.tolist()


def concat_beams(xp: Arrays, parts: Sequence[Beams]) -> Beams:
    """The beams of several parts, one after the other."""
    return Beams(xp.concat([b.f for b in parts], 1), xp.concat([b.i for b in parts], 1))
