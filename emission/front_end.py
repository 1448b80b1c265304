"""The model input of one utterance, made by the model's own Hugging Face feature extractor.

Every transformers CTC model has a feature extractor that turns samples into what the model takes:
raw samples normalised to zero mean and unit variance (Wav2Vec2FeatureExtractor, OmniASR's), or
log-mel filterbank frames (Parakeet's, LASR's, Granite Speech 5's, SeamlessM4T's for
wav2vec2-bert), several of them normalised per utterance. Run on a padded batch, such statistics
would mix in the padding; :class:`FrontEnd` runs the extractor on each utterance *alone* and keeps
only the frames its attention mask marks valid, so that a later zero padding in the batch changes
nothing the model is told is there.

The per-utterance input has time first: (S,) samples, (T, F) frames, or (S, 1) for OmniASR, whose
model takes (B, 1, S); ``time_axis`` says where time goes back in the model's layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Audio lengths (seconds) used to tell the extractor's layout and frame rate at load time.
PROBE_SECONDS = (1.0, 2.0)
# Clips shorter than this (seconds) that an extractor cannot analyse give no frame, not an error.
SHORT_CLIP_S = 0.5
# Longest clip (samples) searched for the shortest input that gives the model one frame.
MIN_SAMPLES_SEARCH_LIMIT = 1 << 16


@dataclass(frozen=True)
class FrontEnd:
    """Waveform -> model input of one utterance, by ``extractor`` (a HF feature extractor).

    input_name / mask_name: the model's keyword for the input and for its padding mask
    (``attention_mask``, OmniASR's ``padding_mask``; None: the model takes no mask).
    mask_key: the key of the mask in the extractor's output.
    time_axis: axis of time in one utterance's input as the model takes it (batch axis left out).
    filterbank: True when the input is feature frames (``input_features``) rather than samples.
    """

    extractor: Any
    input_name: str
    mask_name: str | None
    mask_key: str
    time_axis: int
    sample_rate: int
    min_samples: int = 0  # shorter clips give no frame: not run through the extractor

    @property
    def filterbank(self) -> bool:
        return self.input_name == "input_features"

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(S,) float32 waveform -> (T, ...) float32 input of this utterance alone, time first,
        its valid frames only (T = the extractor's attention-mask count)."""
        if len(audio) < self.min_samples:
            return self._nothing()
        try:
            out = self.extractor(audio, sampling_rate=self.sample_rate,
                                 return_attention_mask=True, return_tensors="pt")
        except (RuntimeError, ValueError, IndexError):
            if len(audio) >= self.sample_rate * SHORT_CLIP_S:
                raise
            return self._nothing()  # shorter than an analysis window: no frame
        x = np.moveaxis(out[self.input_name][0].float().numpy(), self.time_axis, 0)
        mask = out.get(self.mask_key)
        if mask is not None:
            x = x[:int(mask[0].sum())]
        return np.ascontiguousarray(x, dtype=np.float32)

    def _nothing(self) -> np.ndarray:
        """An input of no frames, shaped like a real one (reported as too short for a frame)."""
        clip = np.zeros(max(self.min_samples, int(self.sample_rate * SHORT_CLIP_S)), np.float32)
        return self.features(clip)[:0]

    def input_length(self, num_samples: int) -> int:
        """Valid input steps (samples or frames) the extractor makes of ``num_samples`` samples
        (0 when it cannot make any: too short for one analysis window)."""
        if num_samples <= 0:
            return 0
        try:
            return len(self.features(np.zeros(num_samples, np.float32)))
        except (RuntimeError, ValueError, IndexError, ZeroDivisionError):
            return 0  # e.g. a frame window longer than the clip


def hf_front_end(extractor: Any, forward_params: set[str], sample_rate: int) -> FrontEnd:
    """The :class:`FrontEnd` of ``extractor`` for a model whose forward takes ``forward_params``.

    The layout (which axis is time) is read off the extractor's own output for two lengths of
    silence, not assumed per class.
    """
    names = list(getattr(extractor, "model_input_names", ()) or ("input_values",))
    input_name = names[0]
    mask_key = names[1] if len(names) > 1 else "attention_mask"
    mask_name = mask_key if mask_key in forward_params else \
        "attention_mask" if "attention_mask" in forward_params else None
    shapes = []
    for seconds in PROBE_SECONDS:
        out = extractor(np.zeros(int(seconds * sample_rate), np.float32),
                        sampling_rate=sample_rate, return_attention_mask=True,
                        return_tensors="pt")
        shapes.append(tuple(out[input_name].shape[1:]))
    changed = [i for i, (a, b) in enumerate(zip(*shapes, strict=True)) if a != b]
    if len(changed) != 1:
        raise ValueError(f"cannot tell the time axis of {type(extractor).__name__}'s "
                         f"{input_name} (shapes {shapes} for {PROBE_SECONDS} s of audio)")
    return FrontEnd(extractor, input_name, mask_name, mask_key, changed[0], sample_rate)
