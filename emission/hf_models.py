"""Any transformers CTC model (the fourteen ``*ForCTC`` types of transformers 5.24) as a
:class:`CTCModel`.

One path for all of them, each part read from the model rather than assumed:

- input: the model's own feature extractor run on each utterance alone (emission/front_end.py):
  raw samples (the wav2vec2 family, OmniASR) or filterbank frames (Parakeet, LASR, Granite
  Speech 5, wav2vec2-bert), with the model's keyword for the input and for its padding mask;
- output frames: the model's own length computation (``_get_feat_extract_output_lengths`` of the
  wav2vec2 family and wav2vec2-bert, adapters included; ``_get_subsampling_output_length`` of the
  conformer types and OmniASR) applied to the extractor's valid input length;
- frame shift and the shortest clip giving one frame: from those two, not from a formula;
- token set: from the tokenizer, the blank from the config (``blank_token_id`` where the model
  has one, as OmniASR does, else ``pad_token_id``, the id the model's CTC loss uses);
- exactness under padding: the plan of emission/exactness.py.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.ctc_model import CTCModel, vocabulary_from_tokenizer
from ctclab.emission.exactness import GROUP_NORM_CAPABLE, padding_plan
from ctclab.emission.front_end import MIN_SAMPLES_SEARCH_LIMIT, FrontEnd, hf_front_end

# Clip lengths (seconds) whose frame counts give the frame shift: long enough for any front end.
FRAME_SHIFT_PROBE_S = (10, 20)
LENGTH_METHODS = ("_get_feat_extract_output_lengths", "_get_subsampling_output_length")


class ModuleLengths:
    """Input lengths (samples or feature frames) -> output frames, by the model's own method;
    fewer than ``min_frames`` count as none (an input the model cannot run alone)."""

    def __init__(self, module: Any, min_frames: int = 1):
        self.module, self.min_frames = module, min_frames
        found = [m for m in LENGTH_METHODS if hasattr(module, m)]
        if not found:
            raise ValueError(f"{type(module).__name__} has no output-length computation "
                             f"({' or '.join(LENGTH_METHODS)}): not a transformers CTC model?")
        self.method = found[0]

    def __call__(self, input_lengths: Any) -> Any:
        import torch

        lengths = torch.as_tensor(np.atleast_1d(np.asarray(input_lengths, np.int64)))
        with torch.no_grad():
            out = getattr(self.module, self.method)(lengths)
        frames = np.asarray(torch.as_tensor(out).cpu().numpy(), np.int64)
        frames = np.where(frames >= self.min_frames, frames, 0)
        return int(frames[0]) if np.ndim(input_lengths) == 0 else frames


class InputSteps:
    """Samples -> feature frames the front end makes of them (memoised: lengths repeat)."""

    def __init__(self, front_end: FrontEnd):
        self.front_end = front_end
        self._known: dict[int, int] = {}

    def __call__(self, num_samples: int) -> int:
        if num_samples not in self._known:
            self._known[num_samples] = self.front_end.input_length(num_samples)
        return self._known[num_samples]


def blank_id(config: Any) -> int | None:
    """The CTC blank of a transformers CTC config: ``blank_token_id`` where the model has one
    (OmniASR: 0, its pad being 1), else ``pad_token_id`` (what the other types' CTC loss uses)."""
    blank = getattr(config, "blank_token_id", None)
    return int(blank) if blank is not None else config.pad_token_id


def _conv_stack(config: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kernels, strides) of a raw-sample conv front end (OmniASR keeps them in audio_config)."""
    source = getattr(config, "audio_config", None) or config
    kernels = tuple(int(k) for k in getattr(source, "conv_kernel", ()) or ())
    strides = tuple(int(s) for s in getattr(source, "conv_stride", ()) or ())
    return kernels, strides


def _first_frame(frames_of: Any) -> int:
    """Smallest sample count giving one output frame (binary search; frames grow with samples)."""
    low, high = 1, MIN_SAMPLES_SEARCH_LIMIT
    if frames_of(high) < 1:
        raise ValueError(f"no output frame for {high} samples: the length computation does not "
                         "fit this model")
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if frames_of(mid) < 1 else (low, mid)
    return low


def hf_ctc_model(module: Any, config: Any, extractor: Any, tokenizer: Any, *, name: str,
                 revision: str, vocabulary: Vocabulary | None = None) -> CTCModel:
    """The :class:`CTCModel` of a loaded transformers CTC ``module`` with its ``config``, feature
    ``extractor`` and ``tokenizer`` (None only when ``vocabulary`` is given)."""
    model_type = str(config.model_type)
    rate = int(getattr(extractor, "sampling_rate", 16_000))
    forward_params = set(inspect.signature(module.forward).parameters)
    front = hf_front_end(extractor, forward_params, rate)
    # SEW / SEW-D pool frames in pairs: a single frame cannot run (nor pool) alone.
    lengths = ModuleLengths(module, int(getattr(config, "squeeze_factor", 1) or 1))
    steps = InputSteps(front) if front.filterbank else None

    def frames_of(num_samples: int) -> int:
        return int(lengths(steps(num_samples) if steps is not None else num_samples))

    short, long = (int(s * rate) for s in FRAME_SHIFT_PROBE_S)
    per_frame = (long - short) / max(frames_of(long) - frames_of(short), 1)
    if abs(per_frame - round(per_frame)) < 1e-6:
        per_frame = round(per_frame)
    if vocabulary is None:
        vocabulary = vocabulary_from_tokenizer(tokenizer, int(config.vocab_size), blank_id(config))
    kernels, strides = _conv_stack(config) if not front.filterbank else ((), ())
    first = _first_frame(frames_of)
    front = dataclasses.replace(front, min_samples=first)
    if steps is not None:
        steps.front_end = front  # shorter clips skip the extractor from now on
    group_norm = model_type in GROUP_NORM_CAPABLE and \
        getattr(config, "feat_extract_norm", "layer") == "group"
    return CTCModel(
        module=module, name=name, revision=revision, vocabulary=vocabulary, sample_rate=rate,
        frame_shift_s=float(per_frame) / rate, kernels=kernels, strides=strides,
        normalize=front.features,
        takes_attention_mask=bool(getattr(extractor, "return_attention_mask", False)),
        group_norm=group_norm, kind="hf", model_type=model_type, input_name=front.input_name,
        mask_name=front.mask_name, time_axis=front.time_axis, output_lengths=lengths,
        input_lengths=steps, padding=padding_plan(model_type, config),
        min_input_samples=first)
