"""The loaded-model type every emission path shares: :class:`CTCModel` (what runs, its token set,
its input and output lengths), plus the helpers that build one (the conv length formula, the
token set of a Hugging Face tokenizer). Loading lives in emission/models.py (hub ids, local
directories, torchaudio bundles) and emission/hf_models.py (any transformers CTC type).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctclab.core.vocabulary import SPECIAL_UNUSED_LABELS, Vocabulary
from ctclab.emission.exactness import MASK_ONLY, MASKED_GROUP_NORM, ONE_AT_A_TIME


def conv_output_length(num_samples: Any, kernels: Sequence[int], strides: Sequence[int]) -> Any:
    """Frames out of a stack of unpadded 1-D convolutions: L <- floor((L - k) / s) + 1 per layer.

    num_samples: int or integer array; returns the same kind (0 when the input is shorter than
    the receptive field). For wav2vec2 (k=10,3,3,3,3,2,2; s=5,2,2,2,2,2,2) that is one frame per
    320 samples (20 ms at 16 kHz), starting once 400 samples are available.
    """
    length = np.asarray(num_samples, dtype=np.int64)
    for k, s in zip(kernels, strides, strict=True):
        length = np.maximum((length - k) // s + 1, 0)
    return int(length) if np.ndim(num_samples) == 0 else length


@dataclass(frozen=True)
class CTCModel:
    """A loaded CTC model (``module`` in eval mode on CPU; the extractor moves it).

    name/revision: what made the emissions (revision = hub commit hash, or ``local-<hash>``).
    vocabulary: labels in output index order. sample_rate: Hz the model expects.
    frame_shift_s: seconds per output frame. kernels/strides: the conv stack of a raw-sample model
    (its length formula and receptive field; empty for filterbank models).
    normalize: (S,) float32 waveform -> the model input of that utterance alone, time first:
    (S,) samples or (T, ...) feature frames (the feature extractor's per-utterance normalisation
    and filterbank, only the frames its mask marks valid; emission/front_end.py), or identity.
    takes_attention_mask: the processor would pass an attention mask (layer-norm models).
    group_norm: the first conv layer normalises over time (wav2vec2-base): padding changes its
    statistics, handled by the extractor (see emission/padding.py).
    kind: "hf" or "torchaudio". model_type: the transformers model type ("wav2vec2",
    "parakeet_ctc", ...; "torchaudio" for bundles).
    input_name / mask_name / time_axis: the model's keyword for its input and for its padding
    mask (None: it takes none), and where time goes in one utterance's input as the model takes it
    (0: time first; OmniASR's (1, S) input: 1).
    output_lengths: input lengths (samples, or feature frames) -> output frames, the model's own
    computation (None: the conv formula of kernels/strides).
    input_lengths: samples -> input length (feature frames) for filterbank models; None: the
    input is the samples themselves.
    padding: how padded batches are made exact (emission/exactness.py); None: told from
    group_norm (the masked group norm for HF group-norm models, else the attention mask).
    min_input_samples: shortest clip giving one frame, when not told by kernels/strides.
    """

    module: Any
    name: str
    revision: str
    vocabulary: Vocabulary
    sample_rate: int
    frame_shift_s: float
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    normalize: Callable[[np.ndarray], np.ndarray]
    takes_attention_mask: bool
    group_norm: bool
    kind: str = "hf"
    model_type: str = "wav2vec2"
    input_name: str = "input_values"
    mask_name: str | None = "attention_mask"
    time_axis: int = 0
    output_lengths: Callable[[Any], Any] | None = None
    input_lengths: Callable[[int], int] | None = None
    padding: tuple[str, ...] | None = None
    min_input_samples: int | None = None

    def frames_of_inputs(self, input_lengths: Any) -> Any:
        """Output frames for model inputs of ``input_lengths`` steps (int or int array)."""
        if self.output_lengths is not None:
            return self.output_lengths(input_lengths)
        return conv_output_length(input_lengths, self.kernels, self.strides)

    def num_frames(self, num_samples: Any) -> Any:
        """Output frames for ``num_samples`` input samples (int or array)."""
        if self.input_lengths is None:
            return self.frames_of_inputs(num_samples)
        steps = [self.input_lengths(int(n)) for n in np.atleast_1d(num_samples)]
        frames = np.asarray(self.frames_of_inputs(np.asarray(steps, np.int64)), np.int64)
        return int(frames[0]) if np.ndim(num_samples) == 0 else frames

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one frame (the receptive field)."""
        if self.min_input_samples is not None:
            return self.min_input_samples
        n = 1
        for k, s in reversed(list(zip(self.kernels, self.strides, strict=True))):
            n = (n - 1) * s + k
        return n

    @property
    def padding_plan(self) -> tuple[str, ...]:
        """How padded batches are made exact (constants of emission/exactness.py)."""
        if self.padding is not None:
            return self.padding
        if self.kind == "torchaudio":
            return (ONE_AT_A_TIME,)
        return (MASKED_GROUP_NORM,) if self.group_norm else (MASK_ONLY,)


def zero_mean_unit_var(audio: np.ndarray) -> np.ndarray:
    """(S,) waveform -> (S,) float32 with zero mean and unit variance, computed over these samples
    only: Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm on an unpadded utterance."""
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


def as_float32(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float32, copy=False)


def vocabulary_from_tokenizer(tokenizer: Any, vocab_size: int, pad_token_id: int | None) -> Vocabulary:
    """The CTC vocabulary of a HF CTC tokenizer: labels by id, blank = ``pad_token_id`` (the
    model's blank id: its config's blank_token_id or pad_token_id; None: the tokenizer's pad
    token), ``|`` (or the tokenizer's word delimiter) = delimiter, or word pieces whose first
    piece of a word carries ``▁`` (SentencePiece-style tokenizers); the tokenizer's special tokens
    (``<s> </s> <unk>``, a pad that is not the blank, ...) and ids the tokenizer lacks are marked
    never emitted."""
    by_id = {int(i): tok for tok, i in tokenizer.get_vocab().items()}
    labels = [by_id.get(i, f"<unused_{i}>") for i in range(vocab_size)]
    blank = pad_token_id if pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
    if blank is None:
        raise ValueError("the model defines no pad token (the CTC blank): set pad_token_id in "
                         "its config.json")
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    if delimiter not in labels:
        delimiter = None
    specials = {int(i) for i in getattr(tokenizer, "all_special_ids", ()) if 0 <= int(i) < vocab_size}
    unused = specials | {i for i, lab in enumerate(labels)
                         if lab in SPECIAL_UNUSED_LABELS or lab.startswith("<unused_")}
    unused -= {int(blank), labels.index(delimiter) if delimiter is not None else -1}
    return Vocabulary.from_labels(labels, blank=int(blank), delimiter=delimiter,
                                  unused=sorted(unused))
