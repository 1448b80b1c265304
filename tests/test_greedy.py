"""Greedy decoding: collapse repeats, drop blanks, batch == one at a time, timestamps."""
import numpy as np
from decoding_fixtures import frames, peaky

from ctclab.decoders import create_decoder


def test_collapses_repeats_and_drops_blanks(wav2vec2_vocab):
    v = wav2vec2_vocab
    h, i, bar = v.label_to_id["H"], v.label_to_id["I"], v.delimiter
    path = [0, h, h, 0, i, i, bar, bar, h, 0, h, 0]
    hyp = create_decoder("greedy", v, frame_shift_s=0.02).decode(peaky(path, v.size))
    assert hyp.text == "HI HH"
    assert hyp.tokens == (h, i, bar, h, h)
    assert [w.word for w in hyp.words] == ["HI", "HH"]
    assert (hyp.words[0].start_frame, hyp.words[0].end_frame) == (1, 6)
    assert hyp.words[1].start_s == 8 * 0.02
    assert np.isclose(hyp.score, len(path) * np.log(0.9), atol=1e-4)


def test_batch_equals_one_at_a_time(wav2vec2_vocab):
    rng = np.random.default_rng(0)
    dec = create_decoder("greedy", wav2vec2_vocab)
    emissions = []
    for length in [0, 1, 7, 50, 3]:
        logits = rng.normal(size=(length, wav2vec2_vocab.size)).astype(np.float32) * 3
        emissions.append(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))
    batched = dec.decode_many(emissions)
    single = [dec.decode(e) for e in emissions]
    assert [h.text for h in batched] == [h.text for h in single]
    assert np.allclose([h.score for h in batched], [h.score for h in single], atol=1e-4)
    assert batched[0].text == "" and batched[0].score == 0.0


def test_parallel_jobs_match_serial(wav2vec2_vocab):
    rng = np.random.default_rng(1)
    dec = create_decoder("greedy", wav2vec2_vocab)
    emissions = [peaky(rng.integers(0, 32, size=40), 32) for _ in range(12)]
    assert [h.text for h in dec.decode_many(emissions, jobs=2)] == \
        [h.text for h in dec.decode_many(emissions, jobs=1)]


def test_unused_specials_are_not_on_the_best_path(wav2vec2_vocab):
    v = wav2vec2_vocab  # <unk> is never emitted: the frame it dominates continues the A
    x = frames(v, ["_", "A", {"<unk>": 0.9, "A": 0.08}, "A", "_"])
    hyp = create_decoder("greedy", v).decode(x)
    assert (hyp.text, hyp.tokens) == ("A", (v.label_to_id["A"],))
    a = v.label_to_id["A"]
    assert np.isclose(hyp.score, x[np.arange(5), [v.blank, a, a, a, v.blank]].sum(), atol=1e-4)
