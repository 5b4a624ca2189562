"""Training and distillation settings: one dataclass each, read from TOML/YAML, every field also a CLI flag.

Config files may be flat or grouped in tables (``[model]``, ``[data]``, ...): tables are flattened, so
``[objective] w = 0.2`` and a top-level ``w = 0.2`` mean the same thing. Unknown keys are refused
(a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from ..errors import InputError


@dataclass
class TrainConfig:
    """Everything one ``protlens train`` run depends on (saved with every checkpoint and export)."""

    # --- data ---
    data: str = ""  #: TSV/CSV with id, sequence, family, superfamily (labels may be empty)
    out_dir: str = "runs/train"
    crop: int = 512  #: residues per sequence per read; longer ones get a random window each read
    ece_holdout_frac: float = 0.10  #: sequences held out for masked-token ECE
    label_holdout_frac: float = 0.0  #: fraction of label groups held out entirely (remote-homology test)
    label_holdout_column: str = "family"  #: column whose values are held out (CATH C.A.T.H is `family`)
    label_holdout_prefix: str = "cath:"  #: only labels with this prefix are candidates for holding out
    drop_label_prefixes: list[str] = field(default_factory=list)  #: labels starting so are ignored
    min_family_size: int = 1  #: families with fewer training members are treated as missing labels
    split_seed: int = 0
    # --- model ---
    model: str = "scratch"  #: "scratch" (fresh ESM-2) or anything protlens.models.load_model accepts
    num_layers: int = 6
    hidden_size: int = 320
    num_heads: int = 20
    cluster_dim: int = 0  #: clustering-space dimension (0 = hidden size)
    cluster_head: str = "mlp"  #: mlp (separate 2-layer projection), linear, or none (score P itself, eq. 7)
    # --- objective ---
    objective: str = "mlm+graph"  #: mlm, graph or mlm+graph
    w: float = 0.2  #: family weight in L_commu = w L_family + (1 - w) L_superfamily
    graph_softmax: str = "batch"  #: batch (published in-batch softmax) or full (all nodes, proxy-NCA)
    graph_normalize: bool = False  #: L2-normalise protein and node vectors before the inner product
    graph_temperature: float = 1.0  #: logits are divided by this
    graph_weight: float = 1.0  #: multiplies L_commu in L_model (1 = published)
    delay_k: int = 4  #: superfamily nodes get their accumulated gradient every K optimizer steps (1 = no delay)
    mask_prob: float = 0.15
    # --- optimisation ---
    lr: float = 5e-5
    weight_decay: float = 0.01
    node_lr: float = 0.0  #: learning rate of family/superfamily nodes (0 = same as lr)
    warmup_steps: int = 0
    lr_schedule: str = "constant"  #: constant or cosine (cosine needs max_steps)
    max_tokens: int = 8192  #: padded tokens per micro-batch per device
    grad_accum: int = 1  #: micro-batches per optimizer step per device
    max_grad_norm: float = 1.0
    max_steps: int = 0  #: 0 = no step limit
    max_epochs: float = 0.0  #: 0 = no epoch limit
    max_time_min: float = 0.0  #: wall-clock budget summed over resumed sessions; 0 = none
    precision: str = "auto"  #: auto (bf16 on a bf16 GPU, fp32 otherwise), bf16, fp16 (objective mlm only) or no
    threads: int = 0  #: torch CPU threads (0 = torch default)
    seed: int = 0
    # --- evaluation, logging, checkpoints ---
    eval_every: int = 200  #: optimizer steps between held-out ECE evaluations
    eval_max_seqs: int = 512  #: held-out sequences used for ECE (a fixed subset)
    log_every: int = 10
    save_every_min: float = 10.0
    save_every_steps: int = 0
    keep_checkpoints: int = 2
    resume: str = "auto"  #: auto (latest checkpoint in out_dir), never, or a checkpoint folder
    export_dtype: str = "fp32"  #: fp32 or fp16 weights in the exported HF folder
    export_name: str = "export"
    progress: bool = True


@dataclass
class DistillConfig:
    """Settings of ``protlens distill`` (TinyBERT-style teacher -> student)."""

    teacher: str = ""  #: any load_model source (e.g. an export folder of protlens train)
    data: str = ""
    out_dir: str = "runs/distill"
    student_layers: int = 3
    student_hidden: int = 160
    student_heads: int = 8
    layer_map: str = "uniform"  #: uniform: student layer i <- teacher layer i * (L_t / L_s)
    crop: int = 512
    mask_prob: float = 0.15
    temperature: float = 2.0  #: soft MLM-logit temperature
    hidden_weight: float = 1.0
    attn_weight: float = 1.0
    logit_weight: float = 1.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_tokens: int = 8192
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    max_steps: int = 100
    max_time_min: float = 0.0
    threads: int = 0
    seed: int = 0
    log_every: int = 10
    eval_max_seqs: int = 256
    ece_holdout_frac: float = 0.10
    split_seed: int = 0
    export_dtype: str = "fp32"
    progress: bool = True


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v))
        else:
            out[k.replace("-", "_")] = v
    return out


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Turn a config or command-line value into the field's type, naming the key when that fails."""
    hint = get_type_hints(cls)[key]
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if hint == list[str]:
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            return [str(v) for v in value]
    except (TypeError, ValueError):
        raise InputError(f"config key '{key}': cannot read {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a flat dict."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: invalid TOML ({e})") from None
    elif path.suffix in {".yaml", ".yml"}:
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise InputError(f"{path}: config must be .toml, .yaml or .yml")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: config must be a mapping of keys to values")
    return _flatten(raw)


def make_config(cls: type, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """A ``cls`` instance from an optional file, then ``overrides`` (command-line flags) on top."""
    values: dict[str, Any] = read_config_file(path) if path else {}
    values.update(overrides or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})


def parse_flag_overrides(cls: type, args: list[str]) -> dict[str, Any]:
    """``['--lr', '1e-4', '--objective=mlm', '--no-progress']`` -> ``{'lr': '1e-4', ...}``."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise InputError(f"unexpected argument '{a}': options look like --key value")
        key, eq, val = a[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key.startswith("no_") and key[3:] in names and get_type_hints(cls)[key[3:]] is bool:
                out[key[3:]] = False
                i += 1
                continue
            if key in names and get_type_hints(cls)[key] is bool and (i + 1 == len(args) or args[i + 1].startswith("--")):
                out[key] = True
                i += 1
                continue
            if i + 1 >= len(args):
                raise InputError(f"option --{key} needs a value")
            val = args[i + 1]
            i += 1
        if key not in names:
            raise InputError(f"unknown option --{key.replace('_', '-')}; valid: {', '.join(sorted(names))}")
        out[key] = val
        i += 1
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_to_json(cfg: Any) -> str:
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=True)


def config_help(cls: type) -> str:
    """One line per option with its default (for ``--help``)."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"--{f.name.replace('_', '-')} (default {default!r})")
    return "\n".join(lines)
