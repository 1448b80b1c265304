"""Every transformers CTC model type (issue #12): each built tiny from its config, saved with
save_pretrained and loaded like a hub id; frame counts, exact batching, frame shift and the token
set read from its tokenizer."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from fixtures_audio import make_openslr_corpus
from fixtures_ctc_models import (
    CHAR_LABELS,
    CTC_MODEL_TYPES,
    FILTERBANK_TYPES,
    make_ctc_model,
    piece_labels,
)

from ctclab.emission.exactness import MASK_ONLY, MASKED_ADAPTER, MASKED_GROUP_NORM
from ctclab.emission.extract import ExtractOptions, compute_log_probs, extract
from ctclab.emission.hf_models import hf_ctc_model
from ctclab.emission.models import load_ctc_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster

# float32 CPU: batched and one-at-a-time runs differ by summation order only (measured up to
# 1.4e-5 on these models; a leak of padding shows as 0.1 to 8).
BATCH_TOLERANCE = 1e-4
# Dropping a needed treatment moves log-probs by far more than rounding (0.19 to 7.8 measured).
LEAK = 1e-2
RATE = 16_000
# Seconds per output frame: 320 samples for the conv stacks and wav2vec2-bert (stacked 10 ms
# frames), 8 x 10 ms for parakeet, 4 x 10 ms for lasr (two stride-2 convs) and granite_speech5
# (two stacked 10 ms frames, one subsampling block).
FRAME_SHIFT = {"parakeet_ctc": 0.08, "lasr_ctc": 0.04, "granite_speech5_ctc": 0.04}
HAS_TORCHAUDIO = importlib.util.find_spec("torchaudio") is not None


class GraniteStandIn:
    """Granite Speech 5's feature extractor needs torchaudio (none is built for torch 2.13): a
    stand-in with its layout (two 10 ms frames of 2 x 16 mel+delta values stacked per step,
    a mask over ceil(frames / 2) steps), its values drawn from the samples themselves."""

    model_input_names = ["input_features", "attention_mask"]
    sampling_rate = RATE
    return_attention_mask = True

    def __call__(self, audio: np.ndarray, **_: object) -> dict:
        audio = np.asarray(audio, np.float32)
        steps = -(-(len(audio) // 160) // 2)
        framed = np.zeros(steps * 320, np.float32)
        framed[:min(len(audio), len(framed))] = audio[:len(framed)]
        features = 10 * framed.reshape(steps, 320)[:, :64]
        return {"input_features": torch.from_numpy(features)[None],
                "attention_mask": torch.ones(1, steps, dtype=torch.long)}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("ctc-models")


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32)
            for n in (RATE + 4321, 9001, 4321)]


def _load(model_type: str, path) -> object:
    """The model as load_ctc_model gives it; granite_speech5 without torchaudio: the same path
    from the loaded parts with the stand-in extractor."""
    if model_type != "granite_speech5_ctc" or HAS_TORCHAUDIO:
        return load_ctc_model(str(path))
    from transformers import AutoConfig, AutoModelForCTC, AutoTokenizer

    module = AutoModelForCTC.from_pretrained(path).eval()
    return hf_ctc_model(module, AutoConfig.from_pretrained(path), GraniteStandIn(),
                        AutoTokenizer.from_pretrained(path), name=str(path), revision="test")


@pytest.fixture(scope="module")
def paths(tmp):
    """The fourteen tiny models, saved once for the module."""
    return {t: make_ctc_model(t, tmp / t) for t in CTC_MODEL_TYPES}


@pytest.fixture(scope="module", params=CTC_MODEL_TYPES)
def loaded(request, paths):
    return request.param, paths[request.param], _load(request.param, paths[request.param])


def _extractor(model):
    return model.normalize.__self__.extractor


def test_metadata(loaded):
    model_type, path, model = loaded
    assert model.model_type == model_type and model.kind == "hf"
    assert model.frame_shift_s == pytest.approx(FRAME_SHIFT.get(model_type, 0.02))
    assert model.input_name == ("input_features" if model_type in FILTERBANK_TYPES
                                else "input_values")
    assert model.mask_name == ("padding_mask" if model_type == "omniasr_ctc" else "attention_mask")
    # SEW and SEW-D pool frames in pairs: their shortest runnable input has two.
    first = 2 if model_type in ("sew", "sew-d") else 1
    assert model.num_frames(model.min_samples) == first
    assert model.num_frames(model.min_samples - 1) == 0
    if not (model_type == "granite_speech5_ctc" and not HAS_TORCHAUDIO):
        assert model.revision.startswith("local-")


def test_frame_counts_are_the_models_own(loaded):
    """num_frames(samples) = what the model outputs for that utterance alone, unpadded, and what
    the batched run keeps; clips below min_samples give no frame and never reach the model."""
    _, _, model = loaded
    lengths = [model.min_samples - 1, model.min_samples, 4321, RATE + 123]
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    batched = compute_log_probs(model, clips)
    for clip, got in zip(clips, batched, strict=True):
        expected = model.num_frames(len(clip))
        assert got.shape == (expected, model.vocabulary.size)
        x = model.normalize(clip)
        if expected:
            x = np.moveaxis(x, 0, model.time_axis)
            with torch.no_grad():
                logits = model.module(**{model.input_name: torch.from_numpy(x)[None]}).logits
            assert logits.shape[1] == expected
    assert len(batched[0]) == 0 and len(batched[1]) > 0
    np.testing.assert_array_equal(model.num_frames(np.array(lengths)),
                                  [len(b) for b in batched])


def test_batched_equals_one_at_a_time(loaded, waves):
    _, _, model = loaded
    batched = compute_log_probs(model, waves)
    extractor = _extractor(model)
    for wave, got in zip(waves, batched, strict=True):
        alone = compute_log_probs(model, [wave])[0]
        assert got.shape == alone.shape and len(got) > 0
        assert np.abs(got - alone).max() < BATCH_TOLERANCE
        # Reference: the HF processor and model on this one utterance (no ctclab code involved).
        inputs = extractor(wave, sampling_rate=RATE, return_attention_mask=True,
                           return_tensors="pt")
        mask_key = extractor.model_input_names[1]
        kwargs = {model.input_name: inputs[model.input_name], model.mask_name: inputs[mask_key]}
        with torch.no_grad():
            ref = torch.log_softmax(model.module(**kwargs).logits, -1)[0].numpy()
        assert np.abs(ref[:len(got)] - got).max() < BATCH_TOLERANCE


def test_token_set_from_the_tokenizer(loaded):
    from transformers import AutoTokenizer

    model_type, path, model = loaded
    vocab = model.vocabulary
    tokenizer = AutoTokenizer.from_pretrained(path)
    specials = set(tokenizer.all_special_ids) - {vocab.blank, vocab.delimiter}
    assert specials <= vocab.unused
    if model_type in ("parakeet_ctc", "granite_speech5_ctc", "omniasr_ctc", "lasr_ctc"):
        labels = piece_labels(model_type)
        blank = {"parakeet_ctc": len(labels) - 1}.get(model_type, 0)
        assert vocab.labels == tuple(labels) and vocab.blank == blank
        assert vocab.units == "word_pieces" and vocab.word_start == "▁"
        assert vocab.delimiter is None
        text = "the cat sat on a mat"
    else:
        assert vocab.labels == CHAR_LABELS and vocab.blank == 0
        assert vocab.units == "letters" and vocab.labels[vocab.delimiter] == "|"
        text = "THE CAT SAT ON A MAT"
    if model_type == "omniasr_ctc":  # blank_token_id 0 (<s>); its pad token (1) is never emitted
        assert vocab.labels[vocab.blank] == "<s>" and 1 in vocab.unused
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert vocab.decode_tokens(ids) == text


def test_every_treatment_is_needed(paths, waves):
    """Dropping any one treatment of a model's padding plan makes batched output differ from
    one-at-a-time output: none is decoration."""
    checked = 0
    for model_type in ("wav2vec2", "data2vec-audio", "sew", "sew-d", "wav2vec2-conformer"):
        model = load_ctc_model(str(paths[model_type]))
        exact = compute_log_probs(model, waves[:2])
        for dropped in model.padding_plan:
            rest = tuple(p for p in model.padding_plan if p != dropped) or (MASK_ONLY,)
            leaky = compute_log_probs(dataclasses.replace(model, padding=rest), waves[:2])
            worst = max(np.abs(a - b).max() for a, b in zip(leaky, exact, strict=True))
            assert worst > LEAK, (model_type, dropped)
            checked += 1
    assert checked == 8


@pytest.mark.parametrize("model_type", ["wav2vec2", "wav2vec2-bert"])
def test_adapter_stacks_are_exact(tmp, waves, model_type):
    """add_adapter: two stride-2 adapter layers on top (a frame per 80 ms), exact when batched."""
    import json

    path = make_ctc_model(model_type, tmp / f"{model_type}-adapter")
    config = json.loads((path / "config.json").read_text())
    config.update(add_adapter=True, num_adapter_layers=2, adapter_stride=2, adapter_kernel_size=3,
                  output_hidden_size=32)
    (path / "config.json").write_text(json.dumps(config))
    model = load_ctc_model(str(path))
    assert MASKED_ADAPTER in model.padding_plan and model.frame_shift_s == pytest.approx(0.08)
    batched = compute_log_probs(model, waves)
    for wave, got in zip(waves, batched, strict=True):
        alone = compute_log_probs(model, [wave])[0]
        assert got.shape == alone.shape == (model.num_frames(len(wave)), model.vocabulary.size)
        assert np.abs(got - alone).max() < BATCH_TOLERANCE


def test_filterbank_model_fills_a_cache(tmp):
    """The whole extraction over audio files: durations from the samples (not the feature frames
    the model takes), frame counts and the padding plan recorded."""
    from ctclab.emission.audio_sources import OpenSLRSource

    model = load_ctc_model(str(make_ctc_model("parakeet_ctc", tmp / "parakeet-cache")))
    corpus = make_openslr_corpus(tmp / "corpus", num_utterances=4, seconds=(0.5, 2.0))
    source = OpenSLRSource(corpus.root, corpus.split)
    cache, stats = extract(model, source, tmp / "cache", progress=False,
                           options=ExtractOptions(skip_bad=True, batch_seconds=3.0,
                                                  store_dtype="float32"))
    assert sorted(cache.ids) == corpus.good_ids and cache.meta.frame_shift_s == 0.08
    assert cache.meta.details["model_type"] == "parakeet_ctc"
    assert cache.meta.details["padding"] == [MASK_ONLY]
    assert stats.audio_seconds == pytest.approx(sum(corpus.seconds.values()), abs=1e-3)
    entries = {e.id: e for e in source.entries(skip_bad=True)[0]}
    for record, lp in cache:
        wave = source.load(entries[record.id])
        assert record.audio_seconds == pytest.approx(len(wave) / RATE)
        assert record.num_frames == model.num_frames(len(wave)) == len(lp)
        np.testing.assert_allclose(lp, compute_log_probs(model, [wave])[0], atol=BATCH_TOLERANCE)


def test_group_norm_types_are_told_from_the_config(paths):
    model = load_ctc_model(str(paths["hubert"]))
    assert model.group_norm and MASKED_GROUP_NORM in model.padding_plan
    assert not load_ctc_model(str(paths["data2vec-audio"])).group_norm


@pytest.mark.skipif(HAS_TORCHAUDIO, reason="torchaudio is installed: the real extractor loads")
def test_granite_without_torchaudio_says_what_is_missing(paths):
    with pytest.raises(ImportError, match="granite_speech5_ctc.*torchaudio.*pip install"):
        load_ctc_model(str(paths["granite_speech5_ctc"]))


def test_pinned_batch_path_with_a_clip_too_short(paths, waves):
    """The GPU loader hands the runner a torch tensor (pinned there): rows that give no frame are
    left out of the forward pass and the rest match the numpy path."""
    from ctclab.emission.extract import _Runner, pad_batch

    model = load_ctc_model(str(paths["omniasr_ctc"]))  # (B, 1, S) input: time moved back
    clips = [*waves[:2], np.zeros(model.min_samples - 1, np.float32)]
    padded, lengths = pad_batch([model.normalize(c) for c in clips])
    runner = _Runner(model, torch.device("cpu"), "float32")
    from_tensor = runner(torch.from_numpy(padded), lengths)
    from_array = runner(padded, lengths)
    assert [len(x) for x in from_tensor] == [len(x) for x in from_array] == \
        [model.num_frames(len(c)) for c in clips] and len(from_tensor[2]) == 0
    for a, b in zip(from_tensor, from_array, strict=True):
        np.testing.assert_array_equal(a, b)
