"""How a model's padded batches are made exact: the plan, told from its type and config without
torch (the treatments themselves are in emission/padding.py, whose docstring explains each)."""
from __future__ import annotations

from typing import Any

# How a model's padded batches are made exact (CTCModel.padding; recorded in the cache meta).
MASK_ONLY = "attention mask"
MASKED_GROUP_NORM = "masked group norm"
MASKED_DEPTHWISE = "masked depthwise convs"
MASKED_POSITIONAL = "masked positional convs"
FLOOR_POOLED = "floor-pooled mask"
MASKED_ADAPTER = "masked adapter convs"
ONE_AT_A_TIME = "one at a time"

# Model types whose conv feature encoder may use a per-channel GroupNorm (feat_extract_norm).
GROUP_NORM_CAPABLE = frozenset({"wav2vec2", "hubert", "unispeech", "unispeech-sat", "wavlm", "sew",
                                "sew-d", "wav2vec2-conformer"})
# Types whose config may add a strided conv adapter after the encoder (config.add_adapter).
ADAPTER_CAPABLE = frozenset({"wav2vec2", "wav2vec2-conformer", "wavlm", "data2vec-audio",
                             "wav2vec2-bert"})


def padding_plan(model_type: str, config: Any) -> tuple[str, ...]:
    """The treatments (constants above) that make ``model_type`` exact under padding, or
    ``(ONE_AT_A_TIME,)`` when none is known to."""
    plan = []
    if getattr(config, "add_adapter", False):
        if model_type not in ADAPTER_CAPABLE:
            return (ONE_AT_A_TIME,)
        plan.append(MASKED_ADAPTER)
    if model_type in GROUP_NORM_CAPABLE and getattr(config, "feat_extract_norm", "") == "group":
        plan.append(MASKED_GROUP_NORM)
    if model_type == "wav2vec2-conformer":
        plan.append(MASKED_DEPTHWISE)
    if model_type == "data2vec-audio":
        plan.append(MASKED_POSITIONAL)
    if model_type in ("sew", "sew-d") and int(getattr(config, "squeeze_factor", 1)) > 1:
        plan.append(FLOOR_POOLED)
    return tuple(plan) or (MASK_ONLY,)
