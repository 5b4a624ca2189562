"""Training and distillation settings: one dataclass each, read from TOML/YAML, every field also a CLI flag.

Config files may be flat or grouped in tables (``[model]``, ``[data]``, ...): tables are flattened, so
``[objective] w = 0.2`` and a top-level ``w = 0.2`` mean the same thing. Unknown keys are refused
(a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
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
    out_dir: str = "runs/train"  #: folder for checkpoints, metrics.csv, tensorboard logs and the export
    crop: int = 512  #: residues per sequence per read; longer ones get a random window each read
    ece_holdout_frac: float = 0.10  #: sequences held out for masked-token ECE
    label_holdout_frac: float = 0.0  #: fraction of label groups held out entirely (remote-homology test)
    label_holdout_column: str = "family"  #: column whose values are held out (CATH C.A.T.H is `family`)
    label_holdout_prefix: str = "cath:"  #: only labels with this prefix are candidates for holding out
    drop_label_prefixes: list[str] = field(default_factory=list)  #: labels starting so are ignored
    min_family_size: int = 1  #: families with fewer training members are treated as missing labels
    split_seed: int = 0  #: seed of the held-out splits (keep it to resume or compare runs on one split)
    # --- model ---
    model: str = "scratch"  #: "scratch" (fresh ESM-2) or anything protlens.models.load_model accepts
    num_layers: int = 6  #: transformer layers of a scratch model
    hidden_size: int = 320  #: hidden size of a scratch model
    num_heads: int = 20  #: attention heads of a scratch model (must divide hidden_size)
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
    mask_prob: float = 0.15  #: fraction of residues masked for the MLM loss
    # --- optimisation ---
    lr: float = 5e-5  #: peak learning rate of AdamW
    weight_decay: float = 0.01  #: AdamW weight decay
    node_lr: float = 0.0  #: learning rate of family/superfamily nodes (0 = same as lr)
    warmup_steps: int = 0  #: optimizer steps of linear learning-rate warm-up
    lr_schedule: str = "constant"  #: constant or cosine (cosine needs max_steps)
    max_tokens: int = 8192  #: padded tokens per micro-batch per device
    grad_accum: int = 1  #: micro-batches per optimizer step per device
    max_grad_norm: float = 1.0  #: gradient-norm clip (0 = no clipping)
    max_steps: int = 0  #: 0 = no step limit
    max_epochs: float = 0.0  #: 0 = no epoch limit
    max_time_min: float = 0.0  #: wall-clock budget summed over resumed sessions; 0 = none
    precision: str = "auto"  #: auto (bf16 on a bf16 GPU, fp32 otherwise), bf16, fp16 (objective mlm only) or no
    threads: int = 0  #: torch CPU threads (0 = torch default)
    seed: int = 0  #: seed of initialisation, masking and batch order
    # --- evaluation, logging, checkpoints ---
    eval_every: int = 200  #: optimizer steps between held-out ECE evaluations
    eval_max_seqs: int = 512  #: held-out sequences used for ECE (a fixed subset)
    log_every: int = 10  #: optimizer steps between metrics.csv rows
    save_every_min: float = 10.0  #: minutes between checkpoints (0 = off)
    save_every_steps: int = 0  #: optimizer steps between checkpoints (0 = off)
    keep_checkpoints: int = 2  #: newest checkpoints kept on disk
    resume: str = "auto"  #: auto (latest checkpoint in out_dir), never, or a checkpoint folder
    export_dtype: str = "fp32"  #: fp32 or fp16 weights in the exported HF folder
    export_name: str = "export"  #: subfolder of out_dir for the exported model
    progress: bool = True  #: progress bar on stderr (--no-progress to turn off)


@dataclass
class DistillConfig:
    """Settings of ``protlens distill`` (TinyBERT-style teacher -> student)."""

    teacher: str = ""  #: any load_model source (e.g. an export folder of protlens train)
    data: str = ""  #: TSV/CSV with id and sequence columns (training text for the student)
    out_dir: str = "runs/distill"  #: folder for metrics.csv and the exported student
    student_layers: int = 3  #: transformer layers of the student
    student_hidden: int = 160  #: hidden size of the student
    student_heads: int = 8  #: attention heads of the student (must divide student_hidden)
    layer_map: str = "uniform"  #: uniform: student layer i <- teacher layer i * (L_t / L_s)
    crop: int = 512  #: residues per sequence per read; longer ones get a random window each read
    mask_prob: float = 0.15  #: fraction of residues masked in the student's input
    temperature: float = 2.0  #: soft MLM-logit temperature
    hidden_weight: float = 1.0  #: weight of the hidden-state MSE term
    attn_weight: float = 1.0  #: weight of the attention-map MSE term
    logit_weight: float = 1.0  #: weight of the soft MLM-logit term
    lr: float = 5e-4  #: learning rate of AdamW
    weight_decay: float = 0.01  #: AdamW weight decay
    warmup_steps: int = 0  #: optimizer steps of linear learning-rate warm-up
    max_tokens: int = 8192  #: padded tokens per micro-batch per device
    grad_accum: int = 1  #: micro-batches per optimizer step per device
    max_grad_norm: float = 1.0  #: gradient-norm clip (0 = no clipping)
    max_steps: int = 100  #: optimizer steps to run
    max_time_min: float = 0.0  #: wall-clock budget in minutes; 0 = none
    threads: int = 0  #: torch CPU threads (0 = torch default)
    seed: int = 0  #: seed of initialisation, masking and batch order
    log_every: int = 10  #: optimizer steps between metrics.csv rows
    eval_max_seqs: int = 256  #: held-out sequences used for the final ECE
    ece_holdout_frac: float = 0.10  #: held-out fraction when the teacher carries no split of its own
    split_seed: int = 0  #: seed of that split
    export_dtype: str = "fp32"  #: fp32 or fp16 weights in the exported HF folder
    progress: bool = True  #: progress lines on stderr (--no-progress to turn off)


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


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment (Sphinx's attribute-doc convention): one text for the code and ``--help``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source shipped (e.g. a frozen build): options without descriptions
        return {}
    return {m[1]: m[2].strip() for m in re.finditer(r"^    (\w+): [^=\n]+=[^\n]*?#:(.*)$", source, re.M)}


def config_help(cls: type) -> str:
    """One line per option: flag, type, default and description (for ``--help``)."""
    docs, hints = field_docs(cls), get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        text = f"--{f.name.replace('_', '-')} {kind.upper()} (default {default!r})"
        lines.append(f"{text}: {docs[f.name]}" if f.name in docs else text)
    return "\n".join(lines)
