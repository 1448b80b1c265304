"""Extraction: model loading, exact batching (group-norm and layer-norm models), frame counts,
length-sorted batching, resume after a kill, and the cached result."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from fixtures_audio import make_openslr_corpus, make_tiny_model

from ctclab.emission.audio_sources import OpenSLRSource
from ctclab.emission.cache import CacheWriter, EmissionCache
from ctclab.emission.extract import (
    ExtractOptions,
    compute_log_probs,
    extract,
    pad_batch,
    plan_batches,
)
from ctclab.emission.models import conv_output_length, load_ctc_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster

# float32 CPU: batched and one-at-a-time runs differ only by summation order in the kernels.
BATCH_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("extract")


@pytest.fixture(scope="module")
def corpus(tmp):
    return make_openslr_corpus(tmp / "corpus", num_utterances=6, seconds=(0.5, 3.0))


@pytest.fixture(scope="module", params=["group", "layer"])
def model(request, tmp):
    path = make_tiny_model(tmp / f"model-{request.param}", feat_extract_norm=request.param)
    return load_ctc_model(str(path))  # the same code path as a hub id


@pytest.fixture(scope="module")
def waves(corpus):
    source = OpenSLRSource(corpus.root, corpus.split)
    entries, _ = source.entries(skip_bad=True)
    return [source.load(e) for e in entries]


def test_model_metadata(model):
    vocab = model.vocabulary
    assert (vocab.size, vocab.blank, vocab.delimiter) == (32, 0, 4)
    assert vocab.unused == frozenset({1, 2, 3}) and vocab.labels[5] == "E"
    assert model.frame_shift_s == 0.02 and model.min_samples == 400
    assert model.revision.startswith("local-")
    assert model.group_norm == (model.module.config.feat_extract_norm == "group")
    assert model.takes_attention_mask == (not model.group_norm)


def test_normalisation_is_the_feature_extractors(model, waves, tmp):
    from transformers import AutoFeatureExtractor

    path = tmp / f"model-{'group' if model.group_norm else 'layer'}"
    extractor = AutoFeatureExtractor.from_pretrained(path)
    for wave in waves[:2]:
        expected = extractor(wave, sampling_rate=16_000).input_values[0]
        np.testing.assert_allclose(model.normalize(wave), expected, atol=1e-5)


def test_batched_equals_one_at_a_time(model, waves):
    batched = compute_log_probs(model, waves)
    for wave, got in zip(waves, batched, strict=True):
        alone = compute_log_probs(model, [wave])[0]
        assert got.shape == alone.shape
        assert np.abs(got - alone).max() < BATCH_TOLERANCE
    # Reference: the plain HF forward on one unpadded utterance (no masking tricks involved).
    x = torch.from_numpy(model.normalize(waves[0]))[None]
    with torch.no_grad():
        ref = torch.log_softmax(model.module(x).logits, -1)[0].numpy()
    assert np.abs(batched[0] - ref).max() < BATCH_TOLERANCE


def test_reduced_precision_runs_under_autocast(model, waves):
    """bfloat16 autocast (the CPU stand-in for the GPU float16 path): same shapes, normalised
    log-probs, values that follow the float32 ones.

    A random-init model has flat outputs whose best label flips under bf16's 8-bit mantissa (65-75 %
    argmax agreement on some CPUs), so the check is on the values: correlation above 0.9 (measured
    0.94-0.96), where a wrong path (unmasked padding, a dropped layer) gives far less."""
    full = compute_log_probs(model, waves[:3])
    low = compute_log_probs(model, waves[:3], dtype="bfloat16")
    for a, b in zip(full, low, strict=True):
        assert a.shape == b.shape and b.dtype == np.float32
        np.testing.assert_allclose(np.log(np.exp(b).sum(1)), 0.0, atol=1e-4)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_plain_padding_is_wrong_only_for_group_norm(model, waves):
    """Why the masked GroupNorm exists: plain zero padding (with the attention mask) changes
    wav2vec2-base (group norm) outputs, while a layer-norm model only needs the mask."""
    exact = compute_log_probs(model, waves)
    padded, lengths = pad_batch([model.normalize(w) for w in waves])
    mask = torch.from_numpy(np.arange(padded.shape[1])[None] < lengths[:, None]).long()
    layer = model.module.wav2vec2.feature_extractor.conv_layers[0]
    saved = getattr(layer, "layer_norm", None)
    if saved is not None:  # use the model's own GroupNorm, not the masked wrapper
        layer.layer_norm = getattr(saved, "inner", saved)
    try:
        with torch.no_grad():
            naive = torch.log_softmax(model.module(torch.from_numpy(padded),
                                                   attention_mask=mask).logits, -1).numpy()
    finally:
        if saved is not None:
            layer.layer_norm = saved
    worst = max(np.abs(naive[i, :len(e)] - e).max() for i, e in enumerate(exact))
    if model.group_norm:
        assert worst > 1e-2
    else:
        assert worst < BATCH_TOLERANCE


def test_frame_counts_match_the_model(model):
    lengths = np.array([399, 400, 719, 720, 16_000, 16_123, 48_000])
    formula = conv_output_length(lengths, model.kernels, model.strides)
    hf = model.module._get_feat_extract_output_lengths(torch.from_numpy(lengths)).numpy()
    np.testing.assert_array_equal(formula, hf)
    np.testing.assert_array_equal(formula, [0, 1, 1, 2, 49, 50, 149])
    for n in (400, 16_123):
        with torch.no_grad():
            out = model.module(torch.zeros(1, n)).logits
        assert out.shape[1] == model.num_frames(n)


def test_plan_batches_sorts_and_respects_the_budget():
    rng = np.random.default_rng(0)
    seconds = list(rng.uniform(0.5, 30, size=200)) + [50.0]
    batches = plan_batches(seconds, batch_seconds=60)
    assert sorted(i for b in batches for i in b) == list(range(len(seconds)))
    flat = [seconds[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    for b in batches:
        assert len(b) == 1 or max(seconds[i] for i in b) * len(b) <= 60


def test_extract_resumes_after_a_kill_and_matches_a_clean_run(model, corpus, tmp):
    source = OpenSLRSource(corpus.root, corpus.split)
    options = ExtractOptions(skip_bad=True, batch_seconds=3.0, store_dtype="float32")
    root = tmp / f"cache-{model.group_norm}"

    class Killed(Exception):
        pass

    def kill(n: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        extract(model, source, root, options=options, progress=False, on_batch=kill)
    partial = EmissionCache.open(next(root.rglob("meta.json")).parent, allow_incomplete=True)
    assert 0 < len(partial) < len(corpus.good_ids) and not partial.is_complete
    cache, stats = extract(model, source, root, options=options, progress=False)
    assert stats.resumed == len(partial) and stats.utterances == len(corpus.good_ids) - len(partial)
    assert sorted(cache.ids) == corpus.good_ids and cache.is_complete
    assert sorted(s.id for s in cache.meta.skipped) == sorted(corpus.bad)
    assert cache.meta.revision == model.revision and cache.meta.dtype == "float32"
    assert cache.vocabulary == model.vocabulary
    entries = {e.id: e for e in source.entries(skip_bad=True)[0]}
    for record, lp in cache:
        wave = source.load(entries[record.id])
        assert record.num_frames == model.num_frames(len(wave))
        assert record.audio_seconds == pytest.approx(len(wave) / 16_000)
        np.testing.assert_allclose(lp, compute_log_probs(model, [wave])[0],
                                   atol=BATCH_TOLERANCE)
    again, stats = extract(model, source, root, options=options, progress=False)  # no-op
    assert stats.utterances == 0 and again.ids == cache.ids


def test_cache_writes_overlap_the_next_batch_and_outlive_its_failure(model, corpus, tmp,
                                                                     monkeypatch):
    """Batch 1's cache write runs while batch 2 goes through the model (its write waits for
    batch 2's forward to start: written in turn, it would time out), and when batch 2 fails
    batch 1 is still stored whole: the rerun resumes from it."""
    source = OpenSLRSource(corpus.root, corpus.split)
    options = ExtractOptions(skip_bad=True, batch_seconds=3.0, store_dtype="float32")
    root = tmp / f"cache-overlap-{model.group_norm}"
    second_forward = threading.Event()
    overlapped: list[bool] = []
    store = CacheWriter.add_batch

    def waiting_store(self, items):
        overlapped.append(second_forward.wait(timeout=5))
        store(self, items)

    class ModelBroke(Exception):
        pass

    forwards = []
    real_forward = model.module.forward

    def forward(*args, **kwargs):
        forwards.append(1)
        if len(forwards) == 2:
            second_forward.set()
            raise ModelBroke
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(CacheWriter, "add_batch", waiting_store)
    monkeypatch.setattr(model.module, "forward", forward)
    with pytest.raises(ModelBroke):
        extract(model, source, root, options=options, progress=False)
    assert overlapped == [True]
    partial = EmissionCache.open(next(root.rglob("meta.json")).parent, allow_incomplete=True)
    first = plan_batches([e.seconds for e in source.entries(skip_bad=True)[0]], 3.0)[0]
    assert len(partial) == len(first) and not partial.is_complete
    monkeypatch.undo()
    cache, stats = extract(model, source, root, options=options, progress=False)
    assert stats.resumed == len(first) and sorted(cache.ids) == corpus.good_ids


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown device"):
        ExtractOptions(device="tpu")
    with pytest.raises(ValueError, match="compute dtype"):
        ExtractOptions(dtype="int8")
    with pytest.raises(ValueError, match="batch_seconds"):
        ExtractOptions(batch_seconds=0)


def test_gpu_out_of_memory_names_the_fix(model, waves, monkeypatch):
    """A CUDA out-of-memory error (simulated: no GPU here) becomes an error that says to lower
    --batch-seconds and that stored batches are kept, not a traceback from deep in the model."""
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model.module, "forward", out_of_memory)
    with pytest.raises(RuntimeError, match=r"ran out of memory on a batch of 2 utterances, \d+ s "
                       r"padded: lower --batch-seconds") as caught:
        compute_log_probs(model, waves[:2])
    assert "rerun resumes" in str(caught.value)
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)


def test_float16_on_cpu_is_refused(model, waves):
    with pytest.raises(ValueError, match="needs a GPU.*bfloat16"):
        compute_log_probs(model, waves[:1], dtype="float16")


def test_model_loading_errors(tmp, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries
    with pytest.raises(RuntimeError, match="local directory"):
        load_ctc_model("facebook/wav2vec2-base-960h")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_ctc_model(str(tmp / "no-such-model"))
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torchaudio"):
            load_ctc_model("torchaudio:WAV2VEC2_ASR_BASE_960H")
    else:
        with pytest.raises(ValueError, match="unknown torchaudio ASR bundle"):
            load_ctc_model("torchaudio:NOPE")


def test_unreachable_hub_fails_fast_with_the_fix(monkeypatch):
    # Without offline mode, transformers retries for ~30 s; the probe answers at once instead.
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="Offline\\?.*--model DIR"):
        load_ctc_model("nobody/not-a-cached-model")
    assert time.perf_counter() - start < 10


def test_model_directory_given_with_a_tilde(tmp_path, monkeypatch):
    make_tiny_model(tmp_path / "m")
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = load_ctc_model("~/m")  # as a quoted or --model=~/m argument arrives
    assert loaded.name == "~/m" and loaded.revision.startswith("local-")


def test_hub_probe_uses_the_endpoint_port(monkeypatch):
    import socket

    from ctclab.emission.hub import hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:  # a local mirror on its own port
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_unreachable() is None
    assert isinstance(hub_unreachable(), OSError)  # closed: nothing listens there now
