"""A hub name on a machine without the hub fails at once with the usual message (no download retries)."""

from __future__ import annotations

import pytest

from protlens.errors import InputError
from protlens.models import load_model
from protlens.models.esm import hub_unreachable


def test_offline_flag_and_unreachable_host_are_detected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub_unreachable()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    assert hub_unreachable(timeout=1.0)


def test_uncached_hub_name_is_not_downloaded_when_unreachable(monkeypatch, tmp_path):
    """Unreachable hub, empty cache: the error comes without any download attempt (where the retries were)."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **kw: calls.append(kw))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match=r"not in the local Hugging Face cache .*\(offline\).*--model PATH"):
        load_model("esm2_t6_8M_UR50D")
    assert calls == []
