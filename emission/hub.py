"""A fast check that the Hugging Face hub can be reached, before the libraries' own retries.

Offline, transformers and datasets retry each request for about 30 s before giving up; a user
without the internet deserves the fix (use a local copy) in seconds instead.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

# Seconds to wait for the hub host before calling it unreachable (a DNS failure is immediate).
HUB_PROBE_TIMEOUT_S = 5.0


def hub_offline_mode() -> bool:
    """True when the user asked the HF libraries to stay offline (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_unreachable() -> OSError | None:
    """The connection error when the hub ($HF_ENDPOINT's host and port, or huggingface.co) cannot be reached
    within HUB_PROBE_TIMEOUT_S; None when it answers or offline mode is set (the libraries then
    answer from their caches at once)."""
    if hub_offline_mode():
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)  # a mirror may be plain http
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return exc
    return None


def model_in_hf_cache(repo_id: str, revision: str | None = None) -> bool:
    """True when the model's config.json is already in the local HF cache (loads offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - a malformed id: let transformers word the error
        return False


def use_offline_mode() -> None:
    """Switch the HF libraries of this process to offline mode (answer from cache, no retries)."""
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:  # datasets is only needed for the hf audio source
        pass
