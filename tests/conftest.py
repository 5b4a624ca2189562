"""Shared fixtures: tiny random ESM-2 models in every on-disk format, and the shared data path."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY = dict(num_layers=2, hidden_size=32, num_heads=4)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test cleanly where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


def make_tiny_hf(seed: int = 0, **kw):
    """A random-init HF EsmForMaskedLM of the tiny architecture (hidden 32, 2 layers)."""
    from transformers import EsmForMaskedLM

    from protlens.models import esm2_config

    arch = {**TINY, **kw}
    torch.manual_seed(seed)
    return EsmForMaskedLM(esm2_config(arch["num_layers"], arch["hidden_size"], arch["num_heads"])).eval()


@pytest.fixture()
def tiny_esm():
    """A tiny random ESM-2 wrapped as protlens' EsmPLM."""
    from protlens.models import EsmPLM

    return EsmPLM(make_tiny_hf(), "tiny-esm", "test")


@pytest.fixture()
def tiny_esm_dir(tmp_path) -> Path:
    """A tiny random ESM-2 saved as an HF folder (safetensors + vocab)."""
    from protlens.models import EsmPLM

    out = tmp_path / "tiny_esm_hf"
    EsmPLM(make_tiny_hf(), "tiny-esm", "test").save_pretrained(out)
    return out


@pytest.fixture()
def tiny_fairesm_pt(tmp_path):
    """(path, fair-esm model): a tiny random ESM-2 saved the way fair-esm checkpoints are."""
    esm = pytest.importorskip("esm")
    torch.manual_seed(1)
    model = esm.model.esm2.ESM2(num_layers=2, embed_dim=32, attention_heads=4,
                                alphabet=esm.data.Alphabet.from_architecture("ESM-1b"), token_dropout=True).eval()
    cfg = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_attention_heads=4, token_dropout=True)
    path = tmp_path / "tiny_esm2.pt"
    torch.save({"model": {"encoder." + k: v for k, v in model.state_dict().items()}, "cfg": {"model": cfg}}, path)
    return path, model
