"""Is the Hugging Face Hub reachable from here? Asked once, in seconds, before anything tries to download."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from clipdemo.settings import hub_offline


def hub_reachable(timeout: float = 2.0) -> bool:
    """One TCP connect to the Hub endpoint: seconds at most, where from_pretrained would retry for ~30 s.
    ``HF_HUB_OFFLINE`` is honoured even when it was set after huggingface_hub was imported."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_offline():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
