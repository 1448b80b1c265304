"""Tiny random-init models of every transformers ``*ForCTC`` type, saved like a hub checkout.

``make_ctc_model(model_type, path)`` writes config.json + weights (``save_pretrained``), the
feature extractor's preprocessor_config.json and the tokenizer's files, so that
``load_ctc_model(str(path))`` goes through the same AutoConfig / AutoFeatureExtractor /
AutoTokenizer / AutoModelForCTC path as a hub id. Everything is built here, offline, in well under
a second per model.

Tokenizers follow each type's own: a character CTC tokenizer (Wav2Vec2CTCTokenizer, blank = <pad>
at 0, "|" between words) for the wav2vec2 family and wav2vec2-bert; a SentencePiece-style unigram
word-piece tokenizer (``▁`` starts a word) built with the tokenizers library for parakeet (blank =
the pad token, last), granite_speech5 (blank = pad at 0) and omniasr (blank = <s> at 0, the
config's blank_token_id, distinct from its pad at 1); LasrTokenizer (a unigram over pieces, pad =
blank at 0) for lasr.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The fourteen model types of AutoModelForCTC in transformers 5.24.
CTC_MODEL_TYPES = (
    "data2vec-audio", "granite_speech5_ctc", "hubert", "lasr_ctc", "omniasr_ctc", "parakeet_ctc",
    "sew", "sew-d", "unispeech", "unispeech-sat", "wav2vec2", "wav2vec2-bert",
    "wav2vec2-conformer", "wavlm")
# Fed with filterbank features (input_features) instead of raw samples.
FILTERBANK_TYPES = ("granite_speech5_ctc", "lasr_ctc", "parakeet_ctc", "wav2vec2-bert")
# Types whose first conv layer uses a per-channel GroupNorm over time in these tiny configs
# (wav2vec2-base style): the padding-sensitive front end.
GROUP_NORM_TYPES = ("hubert", "sew", "sew-d", "unispeech", "unispeech-sat", "wav2vec2", "wavlm",
                    "wav2vec2-conformer")

CHAR_LABELS = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ")
# Word pieces of the SentencePiece-style tokenizers: whole words, the bare marker, letters.
PIECES = ("▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁a", "▁", *"abcdefghijklmnopqrstuvwxyz'")
SAMPLE_RATE = 16_000
# A 7-layer wav2vec2 conv stack (320 samples = 20 ms per frame), tiny channels.
CONV = {"conv_dim": (16,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "conv_stride": (5, 2, 2, 2, 2, 2, 2)}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}
POS_CONV = {"num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


def _raw_config(model_type: str) -> Any:
    """Config of a raw-sample conv-front-end type (the wav2vec2 family and omniasr)."""
    import transformers as tf

    norm = "group" if model_type in GROUP_NORM_TYPES else "layer"
    common = {**TINY, **CONV, "vocab_size": len(CHAR_LABELS), "pad_token_id": 0}
    if model_type == "data2vec-audio":
        return tf.Data2VecAudioConfig(**common, num_conv_pos_embeddings=5,
                                      num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5,
                                      num_conv_pos_embedding_layers=2)
    if model_type in ("sew", "sew-d"):
        extra = {"position_buckets": 16, "max_position_embeddings": 64} \
            if model_type == "sew-d" else {}
        cls = tf.SEWDConfig if model_type == "sew-d" else tf.SEWConfig
        return cls(**common, **POS_CONV, squeeze_factor=2, feat_extract_norm=norm, **extra)
    if model_type == "wav2vec2-conformer":
        return tf.Wav2Vec2ConformerConfig(**common, **POS_CONV, feat_extract_norm=norm,
                                          conv_depthwise_kernel_size=7,
                                          position_embeddings_type="relative")
    if model_type == "wavlm":
        return tf.WavLMConfig(**common, **POS_CONV, feat_extract_norm=norm, num_buckets=16,
                              max_bucket_distance=64)
    classes = {"hubert": tf.HubertConfig, "unispeech": tf.UniSpeechConfig,
               "unispeech-sat": tf.UniSpeechSatConfig, "wav2vec2": tf.Wav2Vec2Config}
    return classes[model_type](**common, **POS_CONV, feat_extract_norm=norm,
                               do_stable_layer_norm=norm == "layer")


def _char_tokenizer(path: Path) -> None:
    from transformers import Wav2Vec2CTCTokenizer

    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({lab: i for i, lab in enumerate(CHAR_LABELS)}))
    Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>",
                         word_delimiter_token="|", bos_token="<s>",
                         eos_token="</s>").save_pretrained(path)


def piece_labels(model_type: str) -> list[str]:
    """Token strings by id of the word-piece tokenizer of ``model_type`` (blank included)."""
    if model_type == "parakeet_ctc":
        return ["<unk>", *PIECES, "<pad>"]  # NeMo: SentencePiece ids, then the blank last
    if model_type == "omniasr_ctc":
        return ["<s>", "<pad>", "</s>", "<unk>", *PIECES]  # fairseq2: blank = <s> at 0
    if model_type == "lasr_ctc":
        return ["<pad>", "</s>", "<s>", "<unk>", *PIECES]  # LasrTokenizer: unk at 3
    return ["<pad>", "<unk>", *PIECES]  # granite_speech5


def _piece_tokenizer(path: Path, model_type: str) -> None:
    """A SentencePiece-style unigram tokenizer (Metaspace ``▁``) saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LasrTokenizer, ParakeetTokenizer

    labels = piece_labels(model_type)
    specials = [lab for lab in labels if lab.startswith("<")]
    scores = [(lab, 0.0 if lab in specials else -1.0 if len(lab) > 2 else -4.0)
              for lab in labels]
    if model_type == "lasr_ctc":
        LasrTokenizer(vocab=scores, extra_ids=0, pad_token="<pad>", eos_token="</s>",
                      unk_token="<unk>").save_pretrained(path)
        return
    tok = Tokenizer(models.Unigram(scores, unk_id=labels.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokens = {"unk_token": "<unk>", "pad_token": "<pad>"}
    if model_type == "omniasr_ctc":
        tokens.update(bos_token="<s>", eos_token="</s>")
    ParakeetTokenizer(tokenizer_object=tok, **tokens).save_pretrained(path)


def _filterbank_parts(model_type: str, vocab_size: int) -> tuple[Any, Any]:
    """(config, feature extractor or its preprocessor_config dict) of a filterbank type."""
    import transformers as tf

    if model_type == "parakeet_ctc":
        encoder = {**TINY, "subsampling_conv_channels": 8, "num_mel_bins": 80,
                   "conv_kernel_size": 9}
        return (tf.ParakeetCTCConfig(vocab_size=vocab_size, pad_token_id=vocab_size - 1,
                                     encoder_config=encoder),
                tf.ParakeetFeatureExtractor(feature_size=80))
    if model_type == "lasr_ctc":
        encoder = {**TINY, "subsampling_conv_channels": 16, "num_mel_bins": 32,
                   "conv_kernel_size": 8}
        return (tf.LasrCTCConfig(vocab_size=vocab_size, pad_token_id=0, encoder_config=encoder),
                tf.LasrFeatureExtractor(feature_size=32))
    if model_type == "wav2vec2-bert":
        return (tf.Wav2Vec2BertConfig(**TINY, vocab_size=vocab_size, pad_token_id=0,
                                      feature_projection_input_dim=160,
                                      conv_depthwise_kernel_size=7,
                                      position_embeddings_type="relative_key",
                                      left_max_position_embeddings=16,
                                      right_max_position_embeddings=4),
                tf.SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, stride=2,
                                               return_attention_mask=True))
    encoder = {**TINY, "vocab_size": vocab_size, "num_mel_bins": 16, "context_size": 16,
               "max_position_embeddings": 32, "conv_kernel_size": 7, "subsample_layers": [0]}
    # The extractor itself needs torchaudio: its preprocessor_config.json is written by hand.
    extractor = {"feature_extractor_type": "GraniteSpeech5FeatureExtractor", "num_mel_bins": 16,
                 "sampling_rate": SAMPLE_RATE, "n_fft": 512, "win_length": 400,
                 "hop_length": 160, "delta_win_length": 3, "logmel_floor_db": 8.0,
                 "padding_value": 0.0, "feature_size": 16 * 4}
    return (tf.GraniteSpeech5CTCConfig(vocab_size=vocab_size, pad_token_id=0,
                                       encoder_config=encoder), extractor)


def make_ctc_model(model_type: str, path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random ``model_type`` CTC model with its feature extractor and tokenizer to
    ``path`` (created); return it. Loadable by ``load_ctc_model(str(path))``."""
    import torch
    import transformers as tf

    if model_type not in CTC_MODEL_TYPES:
        raise ValueError(f"unknown CTC model type {model_type!r}; valid: {CTC_MODEL_TYPES}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = model_type not in ("parakeet_ctc", "granite_speech5_ctc", "omniasr_ctc", "lasr_ctc")
    vocab_size = len(CHAR_LABELS) if chars else len(piece_labels(model_type))
    extractor: Any
    if model_type in FILTERBANK_TYPES:
        config, extractor = _filterbank_parts(model_type, vocab_size)
    elif model_type == "omniasr_ctc":
        audio = {**TINY, **CONV, **POS_CONV}
        config = tf.OmniASRCTCConfig(vocab_size=vocab_size, blank_token_id=0, pad_token_id=1,
                                     audio_config={"model_type": "omniasr_audio", **audio})
        extractor = tf.OmniASRFeatureExtractor()
    else:
        config = _raw_config(model_type)
        extractor = tf.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
            return_attention_mask=model_type not in GROUP_NORM_TYPES)
    torch.manual_seed(seed)
    model = tf.AutoModelForCTC.from_config(config).eval()
    with torch.no_grad():  # peaky log-probs like a trained model's
        head = next(m for name, m in model.named_modules()
                    if name.endswith(("lm_head", "ctc_head")) or name == "encoder.out")
        head.weight.mul_(20.0)
    model.save_pretrained(path)
    if isinstance(extractor, dict):
        (path / "preprocessor_config.json").write_text(json.dumps(extractor, indent=1))
    else:
        extractor.save_pretrained(path)
    if chars:
        _char_tokenizer(path)
    else:
        _piece_tokenizer(path, model_type)
    return path
