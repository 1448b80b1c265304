"""The decoder registry: names feed the CLI, unknown names list the valid ones, options validated."""
import pytest

from ctclab.decoders import available_decoders, create_decoder


def test_core_decoders_registered():
    assert {"greedy", "beam", "pyctcdecode"} <= set(available_decoders())


def test_unknown_name_lists_valid_names(wav2vec2_vocab):
    with pytest.raises(ValueError, match="valid names: .*greedy"):
        create_decoder("nope", wav2vec2_vocab)


def test_unknown_option_is_named(wav2vec2_vocab):
    with pytest.raises(ValueError, match="no option"):
        create_decoder("greedy", wav2vec2_vocab, beam_width=3)


@pytest.mark.parametrize("shift", [0, -0.02, float("nan"), float("inf")])
def test_frame_shift_must_be_positive(wav2vec2_vocab, shift):
    with pytest.raises(ValueError, match="frame_shift_s"):
        create_decoder("greedy", wav2vec2_vocab, frame_shift_s=shift)
