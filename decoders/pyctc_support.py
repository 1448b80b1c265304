"""pyctcdecode's LanguageModel over our loaded LM: its unigram set and trie (the slow, large part
of pyctcdecode's LanguageModel) are built once per LM (``LoadedLM.derived``) while decoders that
differ only in their weights (tuning alpha and beta) share it.
"""
from __future__ import annotations

import copy
from typing import Any

from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.lm.language_model import KenLMLanguageModel
from ctclab.lm.loaded import LoadedLM


def pyctc_language_model(lm: LoadedLM, options: PyctcdecodeOptions) -> Any:
    """A pyctcdecode LanguageModel over ``lm``'s KenLM model and known words, with ``options``'
    alpha / beta / unk_score_offset / lm_score_boundary (a shallow copy of the shared one)."""
    import pyctcdecode

    if not isinstance(lm.model, KenLMLanguageModel):
        raise TypeError("pyctcdecode fuses a KenLM model only: give a LoadedLM whose model is a "
                        f"KenLMLanguageModel (lm.load_lm), not {type(lm.model).__name__}")
    model = lm.model
    base = lm.derived("pyctcdecode", lambda: pyctcdecode.LanguageModel(model.kenlm_model,
                                                                        lm.unigrams))
    fused = copy.copy(base)
    fused.alpha, fused.beta = float(options.alpha), float(options.beta)
    fused.unk_score_offset = float(options.unk_score_offset)
    fused.score_boundary = bool(options.lm_score_boundary)
    return fused
