"""The decoder registry: names feed the CLI, unknown names list the valid ones, options validated;
a decoder whose optional package is missing stays known but says what to install."""
import importlib.util

import pytest

from ctclab.decoders import (
    available_decoders,
    base,
    create_decoder,
    decoder_class,
    registered_decoders,
    require_decoder,
)
from ctclab.decoders.greedy import GreedyDecoder
from ctclab.decoders.pyctc import INSTALL_HINT, PyctcdecodeDecoder


def test_core_decoders_registered():
    assert {"greedy", "beam", "pyctcdecode"} <= set(registered_decoders())
    assert {"greedy", "beam"} <= set(available_decoders())


def test_pyctcdecode_is_offered_exactly_where_it_imports():
    importable = importlib.util.find_spec("pyctcdecode") is not None
    assert ("pyctcdecode" in available_decoders()) == importable


@pytest.fixture
def missing_package(monkeypatch):
    """A decoder "needs-missing" whose package does not exist, and pyctcdecode made to need one
    too (as in the numpy-2 environment); the registry is restored after the test."""
    monkeypatch.setattr(base, "_DECODERS", dict(base._DECODERS))
    monkeypatch.setattr(base, "_REQUIREMENTS", dict(base._REQUIREMENTS))
    fake = type("NeedsMissing", (GreedyDecoder,), {})
    base.register("needs-missing", requires="ctclab_no_such_package",
                  install="pip install ctclab-no-such-package")(fake)
    base._REQUIREMENTS["pyctcdecode"] = ("ctclab_no_such_package", INSTALL_HINT)
    return fake


def test_missing_package_keeps_the_name_known_but_not_offered(missing_package, wav2vec2_vocab):
    assert "needs-missing" in registered_decoders()
    assert "needs-missing" not in available_decoders()
    assert "pyctcdecode" not in available_decoders() and "greedy" in available_decoders()
    assert decoder_class("needs-missing") is missing_package   # its options stay declared
    for build in (lambda: require_decoder("needs-missing"),
                  lambda: create_decoder("needs-missing", wav2vec2_vocab),
                  lambda: missing_package(wav2vec2_vocab)):
        with pytest.raises(ImportError, match="needs ctclab_no_such_package, which is not "
                                              "installed; .*pip install ctclab-no-such-package"):
            build()
    with pytest.raises(ValueError, match="valid names: beam, greedy .*not installed here: "
                                         "needs-missing, pyctcdecode"):
        decoder_class("nope")


def test_pyctcdecode_adapter_built_directly_says_what_to_install(missing_package, wav2vec2_vocab):
    with pytest.raises(ImportError, match=r"pip install 'ctclab\[pyctcdecode\]'"):
        PyctcdecodeDecoder(wav2vec2_vocab)


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
