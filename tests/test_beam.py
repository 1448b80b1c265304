"""The ``beam`` decoder without an LM: batching, n-best, timestamps, delimiters, options, real data."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import require_shared
from decoding_fixtures import frames, log_softmax, quartznet_vocab, random_peaky

from ctclab.core.arrays import NUMPY
from ctclab.decoders import Vocabulary, create_decoder
from ctclab.decoders.beam import BeamOptions
from ctclab.decoders.search_finish import frame_seconds
from ctclab.decoders.search_state import Nodes, SearchMemory


def _utterances(vocab: Vocabulary, seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_peaky(rng, int(rng.integers(0, 60)), vocab.size, vocab.blank, sharpness=4.0)
            for _ in range(count)]


@pytest.mark.parametrize("vocab", [quartznet_vocab(), Vocabulary.wav2vec2_english()],
                         ids=["blank-last", "wav2vec2"])
def test_batch_decode_equals_one_at_a_time(vocab):
    xs = _utterances(vocab, seed=1, count=12)
    dec = create_decoder("beam", vocab, beam_width=16, batch_size=5, nbest=3)
    batched = dec.decode_many(xs)
    # the batches' emissions are concatenated into one buffer and their node tables kept in
    # another, each grown to the largest batch; the single decodes below write over them
    # (what they do not write is stale)
    held = dict(dec._memory._buffers)
    assert held["emissions"].size >= (sum(sorted(map(len, xs))[-5:]) + 1) * vocab.size
    assert held["nodes"].dtype == np.int64
    for x, hyp in zip(xs, batched, strict=True):
        single = dec.decode(x)
        # equal to the last bit: each utterance's sums start at its own first frame
        assert hyp == single
    now = dec._memory._buffers
    assert now.keys() == held.keys() and all(now[k] is held[k] for k in held)   # none made again


def test_nbest_is_sorted_distinct_and_starts_with_the_best():
    vocab = quartznet_vocab()
    x = _utterances(vocab, seed=7, count=1)[0]
    hyp = create_decoder("beam", vocab, beam_width=32, nbest=6).decode(x)
    assert len(hyp.nbest) == 6
    scores = [alt.score for alt in hyp.nbest]
    assert scores == sorted(scores, reverse=True)
    assert len({alt.text for alt in hyp.nbest}) == 6
    assert (hyp.nbest[0].text, hyp.nbest[0].score) == (hyp.text, hyp.score)
    assert create_decoder("beam", vocab).decode(x).nbest == ()


def test_word_timestamps_follow_the_frames_of_the_letters():
    v = Vocabulary.wav2vec2_english()
    # frame:   0    1    2    3    4    5    6    7    8    9   10   11   12   13
    spec = ["_", "H", "H", "I", "_", "_", "|", "_", "Y", "O", "_", "U", "U", "_"]
    hyp = create_decoder("beam", v, frame_shift_s=0.02).decode(frames(v, spec))
    assert hyp.text == "HI YOU"
    assert [(w.word, w.start_frame, w.end_frame) for w in hyp.words] == [
        ("HI", 1, 4), ("YOU", 8, 13)]
    assert hyp.words[1].start_s == pytest.approx(0.16) and hyp.words[1].end_s == pytest.approx(0.26)


def test_leading_repeated_and_trailing_delimiters_collapse_into_one_text():
    v = Vocabulary.wav2vec2_english()
    spec = ["|", "_", "A", "|", "_", "|", "B", "|"]
    hyp = create_decoder("beam", v).decode(frames(v, spec))
    assert hyp.text == "A B"
    assert v.decode_tokens(hyp.tokens) == "A B"


def test_blank_skipping_keeps_results_on_peaky_input():
    vocab = quartznet_vocab()
    rng = np.random.default_rng(3)
    xs = [random_peaky(rng, 80, vocab.size, vocab.blank, sharpness=12.0, blank_rate=0.7)
          for _ in range(8)]
    skipping = create_decoder("beam", vocab, blank_skip_threshold=0.999).decode_many(xs)
    exact = create_decoder("beam", vocab, blank_skip_threshold=None).decode_many(xs)
    assert [h.text for h in skipping] == [h.text for h in exact]
    # the only mass dropped is "last label continues through a blank-certain frame": tiny
    for a, b in zip(skipping, exact, strict=True):
        assert a.score == pytest.approx(b.score, abs=0.02)


@pytest.mark.parametrize(("options", "message"), [
    ({"beam_width": 0}, "beam_width"),
    ({"lexicon_mode": "strict"}, "valid: none, soft, hard"),
    ({"blank_skip_threshold": 1.5}, "blank_skip_threshold"),
    ({"token_min_logp": 0.5}, "token_min_logp"),
    ({"nbest": 5, "beam_width": 2}, "nbest"),
    ({"token_top_k": 0}, "token_top_k"),
    ({"token_top_k": True}, "token_top_k"),
])
def test_bad_options_are_rejected_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        BeamOptions(**options)


def test_hotwords_must_be_a_sequence_and_options_names_are_checked():
    with pytest.raises(TypeError, match="sequence"):
        BeamOptions(hotwords="cat")
    with pytest.raises(ValueError, match="valid"):
        create_decoder("beam", quartznet_vocab(), beam_wdith=10)


def test_real_emissions_match_or_beat_greedy():
    root = require_shared("emissions", "quartznet15x5-base-en")
    meta = json.loads((root / "labels.json").read_text())
    vocab = Vocabulary.from_labels(meta["labels"], blank=meta["blank_index"], delimiter=" ")
    with open(root / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[::6]
    xs = [np.load(root / r["split"] / f"{r['id']}.npy") for r in rows]
    beams = create_decoder("beam", vocab, beam_width=100).decode_many(xs)
    greedy = create_decoder("greedy", vocab).decode_many(xs)
    same = sum(b.text == g.text for b, g in zip(beams, greedy, strict=True))
    assert same >= 0.9 * len(xs)
    for b, g, x in zip(beams, greedy, xs, strict=True):
        assert all(w.end_frame <= len(x) for w in b.words)
        if b.text == g.text:
            # the beam sums over alignments, greedy scores one path: never lower for the same text
            assert b.score >= g.score - 1e-3
            # and the words sit where the best path puts them (within a frame or two)
            for wb, wg in zip(b.words, g.words, strict=True):
                assert abs(wb.start_frame - wg.start_frame) <= 2
                assert abs(wb.end_frame - wg.end_frame) <= 2


def test_frames_dominated_by_an_unused_special_do_not_kill_every_path():
    v = Vocabulary.wav2vec2_english()  # <s> </s> <unk> are never emitted
    spec = ["_", "H", {"<unk>": 0.995, "I": 0.003, "_": 0.001}, "_", "_"]
    hyp = create_decoder("beam", v).decode(frames(v, spec))
    assert hyp.text == "HI"
    assert np.isfinite(hyp.score) and hyp.score < 0


def test_missing_lm_file_and_unspellable_hotword_are_clear_errors(tmp_path):
    vocab = quartznet_vocab()
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        create_decoder("beam", vocab, lm_path=str(tmp_path / "nope.arpa"))
    with pytest.raises(ValueError, match="hotword"):
        create_decoder("beam", vocab, hotwords=("café",))


def test_minus_inf_log_probs_are_valid_input():
    v = quartznet_vocab()
    x = frames(v, ["_", "h", "_", "i", "_", "_", "t", "_"])
    x[1, v.blank] = -np.inf                 # blank impossible in a letter frame
    x[4], x[4, v.blank] = -np.inf, 0.0      # a certain blank: folded in closed form
    x[7], x[7, v.blank] = -np.inf, 0.0      # ... also after the last letter
    hyp = create_decoder("beam", v).decode(x)
    assert hyp.text == "hit" and np.isfinite(hyp.score)
    # p = 0 written as -inf or as p = e^-1000 is the same input, up to rounding
    finite = create_decoder("beam", v).decode(np.maximum(x, -1e3))
    assert hyp.score == pytest.approx(finite.score, abs=1e-9)


def test_nbest_texts_are_distinct_when_a_pruned_prefix_is_spelled_again():
    # narrow beams over random emissions of a tiny vocabulary: a prefix gets pruned while its
    # child lives on, then is spelled again; both copies of a text must end up as one hypothesis
    v = Vocabulary.from_labels(["<pad>", "|", "A", "B"], blank=0, delimiter="|")
    rng = np.random.default_rng(0)
    for _ in range(40):
        x = log_softmax(rng.normal(size=(int(rng.integers(5, 40)), v.size))
                        * rng.choice([1.0, 2.0, 3.0]))
        for width in (4, 8):
            hyp = create_decoder("beam", v, beam_width=width, nbest=width, beam_prune_logp=-3.0,
                                 token_min_logp=-8.0, blank_skip_threshold=None).decode(x)
            texts = [alt.text for alt in hyp.nbest]
            assert len(set(texts)) == len(texts), texts


def test_a_bad_emission_deep_in_a_large_chunk_is_named():
    """decode_many checks a chunk's emissions a few thousand frames at a time: a bad one far into
    the chunk still gets validate_log_probs' error, naming its index."""
    v = Vocabulary.from_labels(["|", "a", "b", "<pad>"], blank="<pad>", delimiter="|")
    rng = np.random.default_rng(0)
    emissions = [log_softmax(rng.normal(size=(400, v.size))) for _ in range(120)]
    emissions[97] = np.full((400, v.size), -1.0, np.float32)   # rows do not normalise
    with pytest.raises(ValueError, match=r"emission\[97\].*log_softmax"):
        create_decoder("beam", v).decode_many(emissions)


def test_the_node_table_grows_by_the_search_rate_and_keeps_its_nodes():
    """A full prefix-node table grows to what the search needs at its rate so far (+25%, between
    1.5x and 4x its size), keeping every node."""
    nodes = Nodes(NUMPY, capacity=10)
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 1000, (5, n)) for n in (6, 8, 30, 3)]
    ids = [nodes.add(blocks[0], progress=0.1).tolist()]
    assert nodes.data.shape[1] == 10
    ids.append(nodes.add(blocks[1], progress=0.5).tolist())   # 15 > 10: 1.25 * 15 / 0.5
    assert nodes.data.shape[1] == 37
    ids.append(nodes.add(blocks[2], progress=0.9).tolist())   # 45 > 37: at least 1.5x
    assert nodes.data.shape[1] == 62
    ids.append(nodes.add(blocks[3], progress=0.01).tolist())  # 48 fits
    assert ids == [list(range(1, 7)), list(range(7, 15)), list(range(15, 45)),
                   list(range(45, 48))]
    table = nodes.host()
    assert table.shape == (5, 48)
    assert table[:, 0].tolist() == [-1, 0, 0, 0, 0]   # the root
    assert np.array_equal(table[:, 1:], np.concatenate(blocks, axis=1))


def test_node_tables_reuse_their_memory_and_grow_out_of_it():
    """A node table takes its capacity from the decoder's memory: the next table with the same
    memory writes over the same buffer (a larger one replaces it); a table that outgrows it moves
    to an allocation of its own with every node, leaving the buffer to the next table."""
    memory = SearchMemory()
    first = Nodes(NUMPY, capacity=10, memory=memory)
    first.add(np.ones((5, 4), np.int64))
    buffer = memory._buffers["nodes"]
    second = Nodes(NUMPY, capacity=8, memory=memory)
    assert np.shares_memory(second.data, buffer) and second.data.shape == (5, 8)
    assert second.host()[:, 0].tolist() == [-1, 0, 0, 0, 0]   # the root written again
    blocks = [np.full((5, 6), 7, np.int64), np.full((5, 9), 9, np.int64)]
    second.add(blocks[0])
    second.add(blocks[1], progress=0.5)   # 16 > 8: grown out of the buffer
    assert not np.shares_memory(second.data, buffer)
    assert np.array_equal(second.host()[:, 1:], np.concatenate(blocks, axis=1))
    third = Nodes(NUMPY, capacity=20, memory=memory)   # more than the buffer holds
    assert memory._buffers["nodes"].size == 100 and np.shares_memory(third.data,
                                                                     memory._buffers["nodes"])
    assert np.array_equal(second.host()[:, 1:], np.concatenate(blocks, axis=1))   # untouched


@pytest.mark.parametrize("shift", [0.02, 0.04, 1 / 30])
def test_word_times_are_pythons_rounding_of_every_frame(shift):
    """Word times in seconds are round(frame * shift, 4) as Python computes it, from a table
    kept per shift and grown for later, longer utterances (and one by one for a negative)."""
    rng = np.random.default_rng(7)
    for top in (50, 5000, 20000):   # the table grows
        got = rng.integers(0, top, 300)
        starts, ends, as_list = frame_seconds(got, shift, 100)
        assert starts + ends == [round(f * shift, 4) for f in got.tolist()]
        assert as_list == got.tolist() and len(starts) == 100
    odd = np.array([-1, 3, 0, 7])
    assert frame_seconds(odd, shift, 2)[:2] == ([round(-shift, 4), round(3 * shift, 4)],
                                           [0.0, round(7 * shift, 4)])


def test_batch_cuts_bound_utterances_and_frames_from_the_longest_down():
    from ctclab.decoders.beam import batch_cuts

    lengths = [1, 2, 3, 5, 8, 13, 21]   # ascending, as the decoder sorts them
    assert batch_cuts(lengths, 3, None) == [(4, 7), (1, 4), (0, 1)]
    assert batch_cuts(lengths, 10, 30) == [(6, 7), (2, 6), (0, 2)]   # 21 + 13 > 30
    assert batch_cuts(lengths, 10, 15) == [(6, 7), (5, 6), (3, 5), (0, 3)]   # 21 alone
    assert batch_cuts([], 4, None) == []
    for size, most in [(1, None), (2, 9), (7, 100), (4, 3)]:
        cuts = batch_cuts(lengths, size, most)
        assert [i for a, b in reversed(cuts) for i in range(a, b)] == list(range(7))


def test_every_utterance_is_searched_once_in_batches_cut_by_frames(monkeypatch):
    """The default CPU batch ends where its emissions would pass DEFAULT_BATCH_CELLS_CPU (an
    explicit batch_size is taken as it is); each utterance is searched in exactly one batch
    and counted once by the progress callback; the results are the same as in one batch."""
    from ctclab.decoders import beam, constants

    vocab = quartznet_vocab()
    xs = _utterances(vocab, seed=4, count=23)
    searched: list[int] = []
    original = beam.BatchSearch.__init__

    def spy(self, emissions, *args, **kwargs):
        searched.append(len(emissions))
        original(self, emissions, *args, **kwargs)

    monkeypatch.setattr(beam.BatchSearch, "__init__", spy)
    monkeypatch.setattr(constants, "DEFAULT_BATCH_CELLS_CPU", 100 * vocab.size)   # 100 frames
    dec = create_decoder("beam", vocab, beam_width=8)
    done: list[int] = []
    hyps = dec._decode_chunk(xs, done.append)
    nonempty = sum(1 for x in xs if len(x))
    assert sum(searched) == nonempty and sum(done) == len(xs) and len(searched) > 3
    searched.clear()
    whole = create_decoder("beam", vocab, beam_width=8, batch_size=64).decode_many(xs)
    assert searched == [nonempty] and whole == hyps
    searched.clear()
    done.clear()
    by_five = create_decoder("beam", vocab, beam_width=8, batch_size=5)._decode_chunk(
        xs, done.append)
    assert searched == [5, 5, 5, 5, nonempty - 20] and sum(done) == len(xs) and by_five == hyps
