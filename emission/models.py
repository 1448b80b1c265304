"""Load a CTC acoustic model: a Hugging Face id / local directory (``AutoModelForCTC`` + its
processor) or a torchaudio pipeline bundle (``torchaudio:WAV2VEC2_ASR_BASE_960H``).

The result is a :class:`CTCModel` (emission/ctc_model.py): the torch module, the per-utterance
front end, the :class:`Vocabulary`, the recorded revision and the model's length computation. Any
of the fourteen transformers ``*ForCTC`` types loads (emission/hf_models.py).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.ctc_model import (  # noqa: F401 - re-exported: the model type's old home
    CTCModel,
    as_float32,
    conv_output_length,
    vocabulary_from_tokenizer,
    zero_mean_unit_var,
)
from ctclab.emission.hf_models import hf_ctc_model
from ctclab.emission.hub import hub_unreachable, model_in_hf_cache

TORCHAUDIO_PREFIX = "torchaudio:"
# Hashing this much of each weights file (head and tail) identifies a local model quickly.
LOCAL_HASH_BYTES = 1 << 20
# A hub commit id; HF cache folders are .../snapshots/<commit>/ (transformers reads the commit of a
# model from that path the same way).
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# A word-piece model's own tokenizer, in the order looked for: a Hugging Face tokenizer file, then
# the SentencePiece models that transformers' tokenizers save (T5/ALBERT-style, XLM-R-style,
# LLaMA-style names). lm.spelling.load_tokenizer reads both kinds.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def _local_revision(path: Path) -> str:
    """``local-<sha1 prefix>`` of config.json and the head/tail/size of each weights file."""
    digest = hashlib.sha1()
    for file in sorted(path.iterdir()):
        if file.name == "config.json" or file.suffix in (".safetensors", ".bin", ".pt"):
            digest.update(file.name.encode())
            size = file.stat().st_size
            digest.update(str(size).encode())
            with open(file, "rb") as fh:
                digest.update(fh.read(LOCAL_HASH_BYTES))
                if size > LOCAL_HASH_BYTES:
                    fh.seek(max(size - LOCAL_HASH_BYTES, LOCAL_HASH_BYTES))
                    digest.update(fh.read())
    return "local-" + digest.hexdigest()[:12]


def _snapshot_commit(folder: Path) -> str | None:
    match = re.search(r"snapshots/([^/]+)/", (folder / "config.json").as_posix())
    return match.group(1) if match and COMMIT_RE.match(match.group(1)) else None


def local_model_revision(path: Path) -> str:
    """The revision of a model directory: the hub commit when it is an HF cache snapshot, else
    ``local-<hash>`` of its config and weights."""
    return _snapshot_commit(path) or _local_revision(path)


def resolve_revision(name: str, revision: str | None = None) -> str | None:
    """The revision :func:`load_ctc_model` would record for ``name``, told without torch,
    transformers or the weights (so a run whose cache is complete can stop before loading them).

    A local directory: its hash (or snapshot commit); ``torchaudio:``: the installed torchaudio
    version; a hub id: ``revision`` when it is a commit, else the commit the local HF cache holds
    for it (main by default). None when that cannot be told here (a hub model not downloaded):
    the caller then looks for any cached revision, or loads the model.
    """
    if name.startswith(TORCHAUDIO_PREFIX):
        try:
            return "torchaudio-" + importlib.metadata.version("torchaudio")
        except importlib.metadata.PackageNotFoundError:
            return None
    path = Path(name).expanduser()
    if path.is_dir():
        return local_model_revision(path)
    if revision and COMMIT_RE.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id: no cached revision to tell
        return None
    return _snapshot_commit(Path(found).parent) if isinstance(found, str) else None


def tokenizer_file(name: str, revision: str) -> Path | None:
    """The tokenizer file (TOKENIZER_FILES) of model ``name`` at ``revision`` (what a cache
    records), found without the network or loading anything: in a local model directory that
    still holds that revision, or in the local HF cache for a hub id. None when there is none
    (a torchaudio bundle, a hub model not downloaded here, a directory now holding another
    model)."""
    if name.startswith(TORCHAUDIO_PREFIX):
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        if local_model_revision(path) != revision:
            return None
        return next((path / f for f in TOKENIZER_FILES if (path / f).is_file()), None)
    try:
        from huggingface_hub import try_to_load_from_cache

        for file in TOKENIZER_FILES:
            found = try_to_load_from_cache(name, file, revision=revision)
            if isinstance(found, str):
                return Path(found)
    except Exception:  # noqa: BLE001 - a malformed id or revision: no cached tokenizer
        return None
    return None


def _quiet_progress_off_terminal() -> None:
    """Hub downloads and weight loading draw tqdm bars; off a terminal those are \r spam."""
    if sys.stderr.isatty():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()


def _offline_message(name: str, exc: Exception) -> str:
    return (f"cannot load model {name!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Offline? Download it on a connected machine "
            "(`huggingface-cli download " + name + " --local-dir DIR`) and pass --model DIR "
            "(a local directory with config.json, weights and the processor files).")


def load_ctc_model(name: str, *, revision: str | None = None) -> CTCModel:
    """Load ``name``: a HF hub id, a local directory, or ``torchaudio:BUNDLE_NAME``."""
    if name.startswith(TORCHAUDIO_PREFIX):
        return _load_torchaudio(name[len(TORCHAUDIO_PREFIX):])
    from transformers import AutoConfig, AutoModelForCTC, AutoTokenizer

    path = Path(name).expanduser()  # a quoted "~/model" reaches us unexpanded
    local = path.is_dir()
    if not local and (path.exists() or name.startswith((".", "/", "~"))):
        raise FileNotFoundError(f"model path {name} is not a directory with a saved model "
                                "(config.json + weights); pass a hub id or a model directory")
    unreachable = None if local or model_in_hf_cache(name, revision) else hub_unreachable()
    if unreachable is not None:
        raise RuntimeError(_offline_message(name, unreachable))
    where = str(path) if local else name
    _quiet_progress_off_terminal()
    try:
        config = AutoConfig.from_pretrained(where, revision=revision)
        extractor = _feature_extractor(name, config, where, revision)
        tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
        kwargs = {"attn_implementation": "sdpa"}
        try:
            module = AutoModelForCTC.from_pretrained(where, revision=revision, **kwargs)
        except (ValueError, ImportError):  # model class without sdpa support: default attention
            module = AutoModelForCTC.from_pretrained(where, revision=revision)
    except OSError as exc:
        if local:
            raise FileNotFoundError(f"cannot load the model in {name}: {exc}") from None
        raise RuntimeError(_offline_message(name, exc)) from None
    module.eval()
    commit = getattr(config, "_commit_hash", None) or getattr(module.config, "_commit_hash", None)
    rev = commit or (local_model_revision(path) if local else (revision or "unknown"))
    # name stays as given (hub id or path): eval/run.py finds caches by that same string.
    return hf_ctc_model(module, config, extractor, tokenizer, name=name, revision=rev)


def _feature_extractor(name: str, config: Any, where: str, revision: str | None) -> Any:
    """The model's feature extractor; ImportError naming the missing library (Granite Speech 5's
    needs torchaudio) instead of transformers' generic one."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(where, revision=revision)
    except ImportError as exc:
        raise ImportError(f"the feature extractor of model {name!r} ({config.model_type}) needs a "
                          f"library that is not installed: {' '.join(str(exc).split())[:300]} "
                          "(torchaudio: pip install torchaudio, the build matching your torch)"
                          ) from None


def _load_torchaudio(bundle_name: str) -> CTCModel:
    """A torchaudio ASR pipeline bundle (labels from the bundle; '-' is its blank)."""
    try:
        import torchaudio
    except ImportError:
        raise ImportError("torchaudio models need torchaudio: pip install torchaudio (the build "
                          "matching your torch), or pip install 'ctclab[torchaudio]'") from None
    bundle = getattr(torchaudio.pipelines, bundle_name, None)
    if bundle is None or not hasattr(bundle, "get_labels"):
        names = sorted(n for n in dir(torchaudio.pipelines)
                       if n.endswith(("_960H", "_10M", "_100H", "_ASR")) or "ASR" in n)
        raise ValueError(f"unknown torchaudio ASR bundle {bundle_name!r}; valid names: "
                         f"{', '.join(names)}")
    module = bundle.get_model().eval()
    labels = list(bundle.get_labels())
    vocab = Vocabulary.from_labels(labels, blank=labels.index("-") if "-" in labels else 0,
                                   delimiter="|" if "|" in labels else None)
    rate = int(bundle.sample_rate)
    # torchaudio's wav2vec2 feature extractor: same conv stack as HF wav2vec2.
    kernels, strides = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
    return CTCModel(module=module, name=TORCHAUDIO_PREFIX + bundle_name, revision="torchaudio-"
                    + importlib.metadata.version("torchaudio"), vocabulary=vocab, sample_rate=rate,
                    frame_shift_s=320 / rate, kernels=kernels, strides=strides,
                    normalize=as_float32,
                    takes_attention_mask=False, group_norm=True, kind="torchaudio",
                    model_type="torchaudio")
