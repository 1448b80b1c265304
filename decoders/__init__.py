"""CTC decoders over cached log-probabilities: one protocol, a registry by name.

    from ctclab.decoders import Vocabulary, create_decoder, available_decoders   # usable names
    dec = create_decoder("beam", vocab, beam_width=100, lm_path="4gram.arpa", alpha=0.5)
    hyp = dec.decode(log_probs)          # log_probs: (T, V) float32, natural-log softmax

Every option of every decoder is declared once in ctclab.decoders.options (frozen dataclasses
with help text); the command lines generate their flags from there.
"""
# Importing the implementations registers them with the registry in decoders.base.
from ctclab.core.hypothesis import Hypothesis, WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import beam as _beam  # noqa: F401
from ctclab.decoders import greedy as _greedy  # noqa: F401
from ctclab.decoders import pyctc as _pyctc  # noqa: F401
from ctclab.decoders.base import (
    Decoder,
    available_decoders,
    create_decoder,
    decoder_class,
    register,
    registered_decoders,
    require_decoder,
    validate_log_probs,
)

__all__ = [
    "Decoder",
    "Hypothesis",
    "Vocabulary",
    "WordTimestamp",
    "available_decoders",
    "create_decoder",
    "decoder_class",
    "register",
    "registered_decoders",
    "require_decoder",
    "validate_log_probs",
]
