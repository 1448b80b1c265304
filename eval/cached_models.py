"""Defaults that come from the model whose emissions are decoded.

- Which model when ``--model`` is not given: the one model with complete caches of every
  requested split under the cache root, or an error listing what is cached.
- Which tokenizer spells words in word pieces when ``--tokenizer`` is not given: the model's own,
  when its files are here.

    pick_model(spec, ["test-clean", "dev-clean"])    # -> "facebook/wav2vec2-base-960h"
    model_tokenizer(["beam"], ["4gram.arpa"], {}, caches)   # -> ".../tokenizer.json" or None
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctclab.core.options import field_names
from ctclab.decoders.base import decoder_class
from ctclab.emission.cache import META_FILE, CacheMeta, EmissionCache
from ctclab.emission.models import tokenizer_file
from ctclab.emission.options import EmissionSpec

LOG = logging.getLogger("ctclab.eval")


def cached_models(root: Path, splits: Sequence[str]) -> dict[str, list[str]]:
    """Models with a complete cache under ``root`` (``<model>/<revision>/<source>/<split>/``),
    each with those of ``splits`` it has, in the order given."""
    found: dict[str, set[str]] = {}
    for meta_file in sorted(Path(root).glob(f"*/*/*/*/{META_FILE}")):
        try:
            meta = CacheMeta.read(meta_file.parent)
        except (OSError, ValueError):  # a broken meta.json is not a cache to use
            continue
        if meta is not None and meta.complete and meta.split in splits:
            found.setdefault(meta.model, set()).add(meta.split)
    return {m: [s for s in splits if s in have] for m, have in sorted(found.items())}


def pick_model(spec: EmissionSpec, splits: Sequence[str]) -> str:
    """The model to decode when ``spec`` names none: the one model cached for every split in
    ``splits``. ValueError listing what is cached (and the fix) otherwise, or when audio is
    named (running a model needs its name)."""
    if spec.audio.source_name(None):
        raise ValueError("--model is required to run a model over --data-dir/--manifest/--source "
                         "audio (a Hugging Face id, a local model directory or torchaudio:BUNDLE)")
    root = spec.cache_root()
    models = cached_models(root, splits)
    complete = [m for m, have in models.items() if len(have) == len(splits)]
    if len(complete) == 1:
        LOG.info(f"no --model given: decoding {complete[0]}, the one model with caches of "
                 f"{', '.join(splits)} under {root}")
        return complete[0]
    if complete:
        raise ValueError(f"several models have caches of {', '.join(splits)} under {root}: "
                         f"{', '.join(complete)}; choose one with --model")
    listed = "; ".join(f"{m} ({', '.join(have)})" for m, have in models.items()) or "none"
    raise ValueError(f"say which emissions to decode: no single model has caches of "
                     f"{', '.join(splits)} under {root} (cached, with those splits: {listed}); "
                     "pass --model NAME (cached, or with --data-dir/--manifest/--source to run "
                     "it), or --import-emissions DIR")


def model_tokenizer(decoders: Sequence[str], lms: Sequence[str | None], values: Mapping[str, Any],
                    caches: Sequence[EmissionCache]) -> str | None:
    """``--tokenizer``'s default: the tokenizer file of the model that made ``caches``, to be
    used as if given. Only when no --tokenizer or --lexicon was given (values: the options
    given, by field), a chosen decoder takes a tokenizer, the run has known words for it to spell
    (an LM in ``lms`` or --unigrams), and the caches are word pieces from one model (and
    revision) whose tokenizer is here (emission.models.tokenizer_file); a note names it. None
    otherwise (the decoders then cut words into the longest pieces)."""
    if "tokenizer_path" in values or "lexicon_path" in values or not caches:
        return None
    if not any("tokenizer_path" in field_names(decoder_class(d).Options) for d in decoders):
        return None
    if all(lm is None for lm in lms) and "unigrams_path" not in values:
        return None  # no known words: a tokenizer would spell nothing
    made_by = {(c.meta.model, c.meta.revision) for c in caches}
    if len(made_by) != 1 or any(c.vocabulary.word_start is None for c in caches):
        return None
    ((model, revision),) = made_by
    found = tokenizer_file(model, revision)
    if found is None:
        return None
    LOG.info(f"no --tokenizer given: spelling words in word pieces with {found}, the tokenizer "
             f"of {model}, which made the emissions (--tokenizer FILE chooses another)")
    return str(found)
