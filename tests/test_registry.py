"""The decoder registry: names feed the CLI, unknown names list the valid ones, options validated."""
import pytest

from ctclab.decoders import available_decoders, create_decoder, decoder_class
from ctclab.decoders.base import options_from_mapping


def test_core_decoders_registered():
    assert {"greedy", "beam", "pyctcdecode"} <= set(available_decoders())


def test_unknown_name_lists_valid_names(wav2vec2_vocab):
    with pytest.raises(ValueError, match="valid names: .*greedy"):
        create_decoder("nope", wav2vec2_vocab)


def test_unknown_option_is_named(wav2vec2_vocab):
    with pytest.raises(ValueError, match="no option"):
        create_decoder("greedy", wav2vec2_vocab, beam_width=3)


def test_options_from_mapping_ignores_foreign_and_none_fields():
    cls = decoder_class("beam").Options
    # prune_history is pyctcdecode's only; alpha None keeps the default; beam_width is taken
    got = options_from_mapping(cls, {"beam_width": 5, "alpha": None, "prune_history": True})
    assert got == cls(beam_width=5) and got.alpha == cls().alpha


@pytest.mark.parametrize("shift", [0, -0.02, float("nan"), float("inf")])
def test_frame_shift_must_be_positive(wav2vec2_vocab, shift):
    with pytest.raises(ValueError, match="frame_shift_s"):
        create_decoder("greedy", wav2vec2_vocab, frame_shift_s=shift)
