"""pyctcdecode LM wrappers shared per process: the unigram set and trie (the slow, large part of
pyctcdecode's LanguageModel) are built once per (KenLM model, word list) while tuning alpha/beta.
Loading the KenLM model and the word list itself is shared with ``beam`` (lm.shared).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ctclab.lm.shared import remember

_PYCTC_LM: OrderedDict[tuple, Any] = OrderedDict()


def pyctc_language_model(kenlm_model: Any, unigrams: list[str] | None, options: Any) -> Any:
    """A pyctcdecode LanguageModel with ``options``' alpha/beta/unk_score_offset/boundary.

    The unigram set and trie (the slow, large part) are built once per (model, word list) and
    shared by shallow copies that differ only in the weights. ``unigrams`` is the list
    load_unigrams returns (one object per file version, so an edited word list is a new key).
    """
    import copy

    import pyctcdecode

    # The entry keeps the model and the list alive, so their ids cannot be reused by others.
    key = (id(kenlm_model), id(unigrams))
    entry = _PYCTC_LM.get(key)
    if entry is None:
        entry = remember(_PYCTC_LM, key, (kenlm_model, unigrams,
                                           pyctcdecode.LanguageModel(kenlm_model, unigrams)))
    base = entry[2]
    lm = copy.copy(base)
    lm.alpha, lm.beta = float(options.alpha), float(options.beta)
    lm.unk_score_offset = float(options.unk_score_offset)
    lm.score_boundary = bool(options.lm_score_boundary)
    return lm
