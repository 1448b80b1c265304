"""Exact batching: padded batches give what each utterance gives alone.

Batched emissions must equal one-at-a-time emissions (to float rounding). The attention mask that
every transformers CTC model takes covers attention; these are the places where padding still
leaks, and what is done about each (installed on the module once, told each batch's lengths):

- ``masked group norm``: wav2vec2-base-style front ends (feat_extract_norm="group": wav2vec2,
  hubert, unispeech(-sat), wavlm, sew(-d), wav2vec2-conformer) normalise the first conv layer's
  channels over *all* time steps. :class:`MaskedGroupNorm` takes the statistics of each row over
  its own valid steps only.
- ``masked depthwise convs``: wav2vec2-conformer's convolution modules run a 'same'-padded
  depthwise conv over time without the mask, so frames past the end (no longer zero after the
  first block) reach the last valid frames. The conv's input is zeroed past each row's end, as the
  conv's own zero padding is when the utterance is alone. (Parakeet, LASR, Granite Speech 5 and
  wav2vec2-bert mask there themselves.)
- ``masked positional convs``: data2vec-audio's positional embedding stacks several convs; only
  the first one's input is zeroed by the model.
- ``masked adapter convs``: an ``add_adapter`` stack (wav2vec2, wav2vec2-conformer, wavlm,
  data2vec-audio, wav2vec2-bert) subsamples the encoder output with strided, zero-padded convs
  that the model does not mask: each adapter layer's conv inputs are zeroed past each row's valid
  length at that layer's resolution.
- ``floor-pooled mask``: SEW and SEW-D average-pool frames in pairs (squeeze_factor) for the
  transformer and upsample after. Alone, a trailing odd frame is dropped by the pooling (and its
  output is zero); in a batch the model's max-pooled mask keeps that half-padded pair. The pooled
  mask is floored and the upsampled frames past the last whole pair are zeroed, as alone.

A model whose padding leaks in a way not listed (an adapter on a type not listed above) runs
``one at a time``: slower, never wrong.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ctclab.emission.exactness import (
    FLOOR_POOLED,
    MASKED_ADAPTER,
    MASKED_DEPTHWISE,
    MASKED_GROUP_NORM,
    MASKED_POSITIONAL,
)

# Elements of one float32 chunk in the masked group norm's statistics (valid_statistics): 512 MiB
# at most, where widening a whole float16 batch at once took 10 GiB (1,600 s of audio through
# wav2vec2-base's first conv: 512 channels x 5.1 M steps).
GROUP_NORM_CHUNK = 1 << 27


class MaskedGroupNorm(torch.nn.Module):
    """Replacement for a per-channel ``nn.GroupNorm`` over (B, C, T) that uses, for each batch
    row b, only its first ``valid[b]`` time steps for the statistics (see module docstring).
    With ``valid`` None it is the wrapped GroupNorm unchanged."""

    def __init__(self, inner: torch.nn.GroupNorm):
        super().__init__()
        self.inner = inner
        self.valid: torch.Tensor | None = None  # (B,) int64 frame counts on the host, per batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid is None:
            return self.inner(x)
        # Autocast off: every operation here runs in the dtype it is given (autocast lists
        # addcmul among the ops it "promotes", which would widen all of x to float32 first).
        with torch.autocast(x.device.type, enabled=False):
            mean, var = valid_statistics(x, self.valid)
            scale = torch.rsqrt(var + self.inner.eps)
            if self.inner.affine:
                scale = scale * self.inner.weight.float()[None, :, None]
            shift = -mean * scale
            if self.inner.affine:
                shift = shift + self.inner.bias.float()[None, :, None]
            # (x - mean) * rstd * weight + bias as one multiply-add, x * scale + shift (as
            # torch's own group norm kernels compute it), in float32 and written in x's dtype:
            # one read and one write of x, where the step-by-step form made a dozen float32
            # passes over it
            return torch.addcmul(shift, x, scale, out=torch.empty_like(x))


def valid_statistics(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance), each (B, C, 1) float32: of each row b of x (B, C, T) over its first
    ``valid[b]`` steps (0 and 0 for a row with none).

    valid: (B,) int64 on the host (read there: no device sync). The steps are taken in chunks
    of GROUP_NORM_CHUNK elements (a float16 input's float32 copy bounded by the chunk). Those
    every row holds, [0, lo) with lo the shortest row's count, are reduced by ``var_mean`` (one
    pass); the ragged rest [lo, T), short in a length-sorted batch, with a mask of each row's
    own steps. The chunks are merged by Chan et al.'s pairwise update, exact in real arithmetic
    and stable in floating point (no E[x^2] - E[x]^2).
    """
    rows, channels, steps = x.shape
    valid = valid.clamp(0, steps)
    lo = int(valid.min()) if rows else 0
    valid_here = valid.to(x.device)   # one copy to the device (each copy waits for its queue)
    count = valid_here.to(torch.float32)[:, None, None]
    n_a: float | torch.Tensor = 0.0
    mean = m2 = torch.zeros(rows, channels, 1, device=x.device)
    chunk = max(1, GROUP_NORM_CHUNK // max(1, rows * channels))
    starts = [*range(0, lo, chunk), *range(lo, steps, chunk)]
    for a, b in zip(starts, [*starts[1:], steps], strict=True):
        part = x[..., a:b].float()
        if b <= lo:   # every row holds these steps
            n_b: float | torch.Tensor = float(b - a)
            var_b, mean_b = torch.var_mean(part, dim=-1, correction=0, keepdim=True)
            m2_b = var_b * n_b
        else:         # ragged: each row's own steps only
            keep = _time_mask(valid_here - a, b - a, x.device).to(torch.float32)[:, None]
            n_b = keep.sum(-1, keepdim=True)
            mean_b = (part * keep).sum(-1, keepdim=True) / n_b.clamp_min(1.0)
            m2_b = (((part - mean_b) * keep) ** 2).sum(-1, keepdim=True)
        n = n_a + n_b
        delta = mean_b - mean
        share = n_b / n if isinstance(n, float) else n_b / n.clamp_min(1.0)
        mean = mean + delta * share
        m2 = m2 + m2_b + delta * delta * (n_a * share)
        n_a = n
    return mean, m2 / count.clamp_min(1.0)


def _time_mask(valid: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """(B, steps) bool: step t of row b is one of its first valid[b]."""
    return torch.arange(steps, device=device)[None, :] < valid.to(device)[:, None]


def install_masked_group_norm(module: torch.nn.Module) -> MaskedGroupNorm | None:
    """Swap the first per-channel GroupNorm (conv layer 0) for a masked one; returns the masked
    module (reused when already installed), or None when the model has none."""
    for parent in module.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, MaskedGroupNorm):
                return child
            if isinstance(child, torch.nn.GroupNorm) and child.num_groups == child.num_channels:
                masked = MaskedGroupNorm(child)
                setattr(parent, child_name, masked)
                return masked
    return None


# Attribute of the torch module holding its installed ExactPadding.
INSTALLED_ATTR = "_ctclab_exact_padding"


class ExactPadding:
    """The treatments of ``plan`` installed on ``module``; :meth:`batch` tells them the lengths
    of the batch about to run (outside it, the module behaves as loaded)."""

    def __init__(self, module: torch.nn.Module, plan: tuple[str, ...],
                 conv0: tuple[int, int] | None = None):
        self.plan = plan
        self.module: Any = module  # a transformers model: its length method is read by name
        self.conv0 = conv0  # (kernel, stride) of conv layer 0, for the masked group norm
        self.frames: torch.Tensor | None = None  # (B,) valid output frames of the batch
        self.levels: list[torch.Tensor] = []  # valid frames at the input of each adapter layer
        self.group_norm = install_masked_group_norm(module) if MASKED_GROUP_NORM in plan else None
        self._hooks: list[Any] = []
        self._floor_mask: torch.Tensor | None = None
        if MASKED_DEPTHWISE in plan:
            self._mask_conv_inputs(module, lambda name: name.endswith("conv_module.depthwise_conv"))
        if MASKED_POSITIONAL in plan:
            self._mask_conv_inputs(module, lambda name: ".pos_conv_embed.layers." in name
                                   and name.endswith(".conv"))
        if FLOOR_POOLED in plan:
            self._floor_pooling(module)
        self._adapter_convs: list[tuple[int, int, int]] = []
        if MASKED_ADAPTER in plan:
            self._mask_adapter(module)

    @classmethod
    def install(cls, module: torch.nn.Module, plan: tuple[str, ...],
                conv0: tuple[int, int] | None = None) -> ExactPadding:
        """The treatments of ``plan`` on ``module``, installed once (a later runner of the same
        module reuses them; another plan replaces them)."""
        existing = getattr(module, INSTALLED_ATTR, None)
        if isinstance(existing, ExactPadding):
            if existing.plan == plan and existing.conv0 == conv0:
                return existing
            existing.remove()
        exact = cls(module, plan, conv0)
        setattr(module, INSTALLED_ATTR, exact)
        return exact

    def remove(self) -> None:
        """Take the hooks off (a masked group norm stays: without lengths it is the plain one)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @contextmanager
    def batch(self, input_lengths: np.ndarray, frames: np.ndarray) -> Iterator[None]:
        """Within: the module runs the batch whose rows have ``input_lengths`` input steps and
        ``frames`` output frames exactly."""
        self.frames = torch.from_numpy(np.asarray(frames, np.int64))
        if self.group_norm is not None and self.conv0 is not None:
            kernel, stride = self.conv0
            self.group_norm.valid = torch.from_numpy(
                np.maximum((np.asarray(input_lengths, np.int64) - kernel) // stride + 1, 0))
        if self._adapter_convs:
            with torch.no_grad():  # frames entering the adapter: the encoder's, before it
                level = torch.as_tensor(self.module._get_feat_extract_output_lengths(
                    torch.from_numpy(np.asarray(input_lengths, np.int64)), add_adapter=False))
            self.levels = []
            for kernel, stride, pad in self._adapter_convs:
                self.levels.append(level.long())
                level = torch.div(level + 2 * pad - kernel, stride, rounding_mode="floor") + 1
        try:
            yield
        finally:
            self.frames = self._floor_mask = None
            self.levels = []
            if self.group_norm is not None:
                self.group_norm.valid = None

    def _mask_conv_inputs(self, module: torch.nn.Module, wanted: Any) -> None:
        """Zero each selected conv's (B, C, T) input past each row's valid frames."""

        def pre_hook(_: torch.nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            if self.frames is None:
                return None
            keep = _time_mask(self.frames, x.shape[-1], x.device)[:, None]
            return (x * keep.to(x.dtype), *args[1:])

        found = [m for name, m in module.named_modules() if wanted(name)]
        if not found:
            raise ValueError(f"no convolution to mask in {type(module).__name__} (the padding "
                             f"plan {self.plan} does not fit this model)")
        self._hooks += [m.register_forward_pre_hook(pre_hook) for m in found]

    def _mask_adapter(self, module: torch.nn.Module) -> None:
        """Zero the inputs of adapter layer i's convs past each row's valid frames at level i."""
        adapter = next((m for name, m in module.named_modules()
                        if name.endswith("adapter") and hasattr(m, "layers")), None)
        if adapter is None:
            raise ValueError(f"no adapter in {type(module).__name__} (the padding plan "
                             f"{self.plan} does not fit this model)")
        for index, layer in enumerate(adapter.layers):
            convs = [m for m in layer.modules() if isinstance(m, torch.nn.Conv1d)]
            first = convs[0]
            self._adapter_convs.append((int(first.kernel_size[0]), int(first.stride[0]),
                                        int(first.padding[0])))

            def pre_hook(_: torch.nn.Module, args: tuple, index: int = index) -> tuple | None:
                if not self.levels:
                    return None
                x = args[0]
                keep = _time_mask(self.levels[index], x.shape[-1], x.device)[:, None]
                return (x * keep.to(x.dtype), *args[1:])

            self._hooks += [conv.register_forward_pre_hook(pre_hook) for conv in convs]

    def _floor_pooling(self, module: torch.nn.Module) -> None:
        """SEW / SEW-D: the pooled attention mask floored, upsampled frames past the last whole
        pooling window zeroed (see the module docstring)."""
        encoder = next(m for name, m in module.named_modules() if hasattr(m, "upsample")
                       and hasattr(m, "pool"))
        squeeze = int(encoder.config.squeeze_factor)

        def pooled_valid(device: torch.device, steps: int) -> torch.Tensor:
            assert self.frames is not None
            return _time_mask(self.frames // squeeze, steps, device)

        def upsample_hook(_: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            if self.frames is None:
                return None
            keep = _time_mask(self.frames // squeeze * squeeze, out.shape[1], out.device)
            return out * keep[..., None].to(out.dtype)

        self._hooks.append(encoder.upsample.register_forward_hook(upsample_hook))
        if hasattr(encoder, "layers"):  # SEW: each layer takes the 4-D mask as a keyword
            from transformers.masking_utils import create_bidirectional_mask

            def layer_hook(_: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
                if self.frames is None:
                    return None
                hidden = args[0] if args else kwargs["hidden_states"]
                if self._floor_mask is None or self._floor_mask.shape[-1] != hidden.shape[1]:
                    valid = pooled_valid(hidden.device, hidden.shape[1])
                    self._floor_mask = create_bidirectional_mask(
                        config=encoder.config, inputs_embeds=hidden, attention_mask=valid)
                return args, {**kwargs, "attention_mask": self._floor_mask}

            self._hooks += [layer.register_forward_pre_hook(layer_hook, with_kwargs=True)
                            for layer in encoder.layers]
        else:  # SEW-D: the transformer stack takes the 2-D pooled mask as its second argument
            def stack_hook(_: torch.nn.Module, args: tuple) -> tuple | None:
                if self.frames is None:
                    return None
                hidden, mask = args[0], args[1]
                valid = pooled_valid(hidden.device, hidden.shape[1])
                valid = valid.to(mask.dtype) if mask is not None else valid.long()
                return (hidden, valid, *args[2:])

            self._hooks.append(encoder.encoder.register_forward_pre_hook(stack_hook))
