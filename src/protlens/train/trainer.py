"""``protlens train``: masked LM and community-propagation clustering on HF Accelerate.

One code path for one CPU, one GPU, several GPUs and several nodes: launch with ``python -m
protlens.cli train``, ``torchrun`` or ``accelerate launch`` and Accelerate wires up DDP, bf16 and the
process group. Determinism contract (tested): the loss curve does not depend on whether the run
was interrupted and resumed, nor on how the global step is split over processes and micro-batches.

Delay K (the paper's time-delayed family -> superfamily exchange): superfamily nodes sit in their
own optimizer; their gradients accumulate for K optimizer steps and are applied together every K-th
step (K = 1: no delay). Protein -> family links (family nodes, encoder, heads) update every step.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import _ece
from .._training_set import training_frame, write_training_set
from ..errors import InputError
from .config import TrainConfig, config_to_dict
from .data import (
    Collator, LabelVocab, drop_small_families, eval_batches, file_sha256, fill_labels, make_splits,
    plan_epoch, read_corpus, seq_rng, shard_step,
)
from .module import CLUSTER_HEADS, OBJECTIVES, ComproModule, LossSums, combine

CSV_FIELDS = ["step", "epoch", "tokens", "elapsed_s", "lr", "loss", "mlm", "family", "superfamily", "commu",
              "tokens_per_s", "ece_heldout"]


@dataclass
class TrainResult:
    """Where a run left its files and what it measured last."""

    out_dir: Path
    export_dir: Path | None
    step: int
    tokens: int
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def validate(cfg: TrainConfig) -> None:
    if not cfg.data:
        raise InputError("no training data: set 'data' in the config or pass --data PATH")
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"objective '{cfg.objective}' unknown; use one of {', '.join(OBJECTIVES)}")
    if cfg.graph_softmax not in {"batch", "full"}:
        raise InputError(f"graph_softmax '{cfg.graph_softmax}' unknown; use batch or full")
    if not 0.0 <= cfg.w <= 1.0:
        raise InputError(f"w = {cfg.w}: must lie in [0, 1]")
    if cfg.cluster_head not in CLUSTER_HEADS:
        raise InputError(f"cluster_head '{cfg.cluster_head}' unknown; use one of {', '.join(CLUSTER_HEADS)}")
    if cfg.cluster_head == "none" and cfg.cluster_dim not in (0, cfg.hidden_size):
        raise InputError(f"cluster_head none scores the protein vector itself: cluster_dim must be 0, "
                         f"not {cfg.cluster_dim}")
    if cfg.delay_k < 1:
        raise InputError(f"delay_k = {cfg.delay_k}: must be >= 1 (1 = no delay)")
    if not 1 <= cfg.crop <= 1022:
        raise InputError(f"crop = {cfg.crop}: must be 1..1022 residues (ESM-2 positions)")
    if cfg.max_tokens < cfg.crop + 2:
        raise InputError(f"max_tokens = {cfg.max_tokens} is smaller than one cropped sequence ({cfg.crop} + 2)")
    if cfg.lr_schedule not in {"constant", "cosine"}:
        raise InputError(f"lr_schedule '{cfg.lr_schedule}' unknown; use constant or cosine")
    if cfg.lr_schedule == "cosine" and cfg.max_steps <= 0:
        raise InputError("lr_schedule = cosine needs max_steps > 0")
    if cfg.precision not in {"auto", "bf16", "fp16", "no"}:
        raise InputError(f"precision '{cfg.precision}' unknown; use auto, bf16, fp16 or no")
    if cfg.precision == "fp16" and "graph" in cfg.objective:
        # Accelerate's one GradScaler serves both optimizers: clip_grad_norm_ unscales the pending
        # superfamily gradient every step, opt_sf.step() unscales it again after the main step's
        # scaler.update(), and gradients summed over K steps carry different loss scales.
        raise InputError("precision fp16 is not supported with a graph objective (the delayed superfamily "
                         "optimizer does not work with the fp16 loss scaler); use bf16 or no")
    if cfg.export_dtype not in {"fp32", "fp16"}:
        raise InputError(f"export_dtype '{cfg.export_dtype}' unknown; use fp32 or fp16")
    if cfg.graph_temperature <= 0:
        raise InputError("graph_temperature must be > 0")


def build_backbone(cfg: TrainConfig):
    """A trainable HF ``EsmForMaskedLM``: fresh ESM-2 architecture or any model load_model reads."""
    from transformers import EsmForMaskedLM

    from ..models import EsmPLM, esm2_config, load_model

    if cfg.model == "scratch":
        if cfg.hidden_size % cfg.num_heads:
            raise InputError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
        torch.manual_seed(cfg.seed)
        return EsmForMaskedLM(esm2_config(cfg.num_layers, cfg.hidden_size, cfg.num_heads))
    plm = load_model(cfg.model)
    if not isinstance(plm, EsmPLM):
        raise InputError(f"model '{cfg.model}' has no trainable weights (k-mer baseline); use an ESM-2 model or 'scratch'")
    return plm.hf


def lr_at(cfg: TrainConfig, step: int, base: float) -> float:
    """Linear warm-up then constant or cosine decay (to 10% of ``base``), stateless so resume is exact."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    return base


def _param_groups(module: ComproModule, cfg: TrainConfig) -> tuple[list[dict], list[torch.nn.Parameter]]:
    decay, no_decay, nodes = [], [], []
    sf = []
    for name, p in module.named_parameters():
        if name == "superfamily_nodes":
            sf.append(p)
        elif name == "family_nodes":
            nodes.append(p)
        elif p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "base_lr": cfg.lr}]
    if nodes:
        groups.append({"params": nodes, "weight_decay": 0.0, "base_lr": cfg.node_lr or cfg.lr})
    return groups, sf


class _Logger:
    """metrics.csv + TensorBoard, truncated to the resumed step so curves never double back."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        rows = []
        if self.path.exists() and start_step > 0:
            with open(self.path) as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            wr.writeheader()
            wr.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is a declared dependency; keep training if a user removed it
            warnings.warn("tensorboard not installed: logging to metrics.csv only", stacklevel=2)

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})
        if self.tb is not None:
            for k, v in row.items():
                if k not in {"step", "epoch"} and v != "" and v is not None:
                    self.tb.add_scalar(f"train/{k}" if k != "ece_heldout" else "eval/ece_heldout", float(v), int(row["step"]))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _latest_checkpoint(out_dir: Path) -> Path | None:
    done = sorted((p for p in (out_dir / "checkpoints").glob("step-*") if (p / "state.json").exists()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


class Trainer:
    """Holds one run's state; :func:`train` is the public entry point."""

    def __init__(self, cfg: TrainConfig) -> None:
        validate(cfg)
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        precision = cfg.precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.objective == "graph")
        # cpu=True is what makes Accelerate form a gloo process group under torchrun on CPU-only machines
        cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.acc = Accelerator(mixed_precision=precision, kwargs_handlers=[ddp], cpu=cpu)
        self.world = self.acc.num_processes
        self.rank = self.acc.process_index
        self.out = Path(cfg.out_dir)
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        self._prepare_data()
        self._prepare_model()

    # -- data ---------------------------------------------------------------------------------------
    def _prepare_data(self) -> None:
        cfg = self.cfg
        df = read_corpus(cfg.data, cfg.drop_label_prefixes)
        split = make_splits(df, cfg.split_seed, cfg.ece_holdout_frac, cfg.label_holdout_frac,
                            cfg.label_holdout_column, cfg.label_holdout_prefix)
        if self.acc.is_main_process:
            import pandas as pd

            pd.DataFrame({"id": df["id"], "split": split}).to_csv(self.out / "splits.tsv", sep="\t", index=False)
        self.split_counts = split.value_counts().to_dict()
        self.training_set = training_frame(df["id"], split, df["family"], df["superfamily"], df["sequence"])
        train_df = df[split.eq("train").to_numpy()].reset_index(drop=True)
        if train_df.empty:
            raise InputError(f"{cfg.data}: no training sequences left after the held-out splits")
        train_df, self.n_small_dropped = drop_small_families(train_df, cfg.min_family_size)
        self.vocab: LabelVocab | None = None
        if "graph" in cfg.objective:
            labelled = (train_df["family"].map(len) + train_df["superfamily"].map(len)).gt(0)
            if not labelled.any():
                raise InputError(f"{cfg.data}: objective '{cfg.objective}' needs family/superfamily labels, "
                                 "but no training sequence has any (use objective = mlm)")
            self.vocab = LabelVocab.from_frame(train_df)
            counts = np.bincount([self.vocab.fam_idx[f] for labs in train_df["family"] for f in labs],
                                 minlength=len(self.vocab.families))
            singletons = int((counts == 1).sum())
            if singletons and self.acc.is_main_process:
                print(f"protlens train: note: {singletons} of {len(self.vocab.families)} families have a single "
                      "training member; they are kept (their node is pulled to that one protein). "
                      "Set min_family_size to fall back to the superfamily label instead.", file=sys.stderr)
            self.n_labelled = int(labelled.sum())
        self.train_df = train_df
        self.train_lengths = np.minimum(train_df["sequence"].str.len().to_numpy(), cfg.crop) + 2
        self.n_cropped = int((train_df["sequence"].str.len() > cfg.crop).sum())
        self.collator = Collator(train_df["sequence"].tolist(), train_df["family"].tolist(),
                                 train_df["superfamily"].tolist(), self.vocab, cfg.crop, cfg.mask_prob,
                                 mlm="mlm" in cfg.objective)
        ece_df = df[split.eq("ece_holdout").to_numpy()].reset_index(drop=True)
        if len(ece_df) > cfg.eval_max_seqs:
            pick = np.sort(np.random.default_rng([cfg.split_seed, 11]).choice(len(ece_df), cfg.eval_max_seqs, replace=False))
            ece_df = ece_df.iloc[pick].reset_index(drop=True)
        self.ece_collator = Collator(ece_df["sequence"].tolist(), [[]] * len(ece_df), [[]] * len(ece_df), None,
                                     cfg.crop, cfg.mask_prob, mlm=True, all_mask=True)
        lens = np.minimum(ece_df["sequence"].str.len().to_numpy(), cfg.crop) + 2
        self.ece_batches = eval_batches(lens, cfg.max_tokens) if len(ece_df) else []
        self.tokens_per_step = cfg.max_tokens * cfg.grad_accum * self.world
        self.min_seqs = self.world * cfg.grad_accum

    # -- model ------------------------------------------------------------------------------------
    def _prepare_model(self) -> None:
        cfg = self.cfg
        hf = build_backbone(cfg)
        torch.manual_seed(cfg.seed + 1)
        v = self.vocab
        module = ComproModule(hf, len(v.families) if v else 0, len(v.superfamilies) if v else 0, cfg.cluster_dim,
                              cfg.objective, cfg.graph_softmax, cfg.graph_normalize, cfg.graph_temperature,
                              cfg.cluster_head)
        module.train()
        self.n_params = sum(p.numel() for p in hf.parameters())
        groups, sf = _param_groups(module, cfg)
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
        if sf:
            opt_sf = torch.optim.AdamW([{"params": sf, "weight_decay": 0.0, "base_lr": cfg.node_lr or cfg.lr}], lr=cfg.lr)
            self.model, self.opt, self.opt_sf = self.acc.prepare(module, opt, opt_sf)
        else:
            self.model, self.opt = self.acc.prepare(module, opt)
            self.opt_sf = None

    @property
    def module(self) -> ComproModule:
        return self.acc.unwrap_model(self.model)

    # -- state ------------------------------------------------------------------------------------
    def _save(self, state: dict) -> Path:
        ckpt = self.out / "checkpoints" / f"step-{state['step']:08d}"
        self.acc.wait_for_everyone()
        self.acc.save_state(str(ckpt))
        if self.acc.is_main_process:
            if self.opt_sf is not None:
                g = self.module.superfamily_nodes.grad
                torch.save(None if g is None else g.detach().cpu(), ckpt / "pending_superfamily_grad.pt")
            (ckpt / "config.json").write_text(json.dumps(config_to_dict(self.cfg), indent=2))
            (ckpt / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks completion
            old = sorted((p for p in (self.out / "checkpoints").glob("step-*") if p != ckpt),
                         key=lambda p: int(p.name.split("-")[1]))
            for p in old[: max(0, len(old) - (self.cfg.keep_checkpoints - 1))]:
                shutil.rmtree(p, ignore_errors=True)
        self.acc.wait_for_everyone()
        return ckpt

    def _resume(self) -> dict:
        cfg = self.cfg
        state = {"step": 0, "epoch": 0, "step_in_epoch": 0, "tokens": 0, "elapsed_s": 0.0}
        if cfg.resume == "never":
            return state
        ckpt = _latest_checkpoint(self.out) if cfg.resume == "auto" else Path(cfg.resume)
        if ckpt is None:
            return state
        if not (ckpt / "state.json").exists():
            raise InputError(f"resume: {ckpt} is not a complete protlens checkpoint (no state.json)")
        self.acc.load_state(str(ckpt))
        pending = ckpt / "pending_superfamily_grad.pt"
        if self.opt_sf is not None and pending.exists():
            g = torch.load(pending, weights_only=True)
            if g is not None:
                self.module.superfamily_nodes.grad = g.to(self.module.superfamily_nodes.device)
        state = json.loads((ckpt / "state.json").read_text())
        if self.acc.is_main_process:
            print(f"protlens train: resumed from {ckpt} (step {state['step']})", file=sys.stderr)
        return state

    # -- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_ece(self) -> float:
        """Masked-token ECE (:mod:`protlens._ece`) on the fixed held-out subset (same masks every time)."""
        if not self.ece_batches:
            return float("nan")
        m = self.module
        m.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=self.acc.device)
        for bi in range(self.rank, len(self.ece_batches), self.world):
            b = self.ece_collator(self.ece_batches[bi], (self.cfg.split_seed, 99), random_crop=False).to(self.acc.device)
            with self.acc.autocast():
                hidden = m.encode(b.input_ids, b.attention_mask)
                sel = b.labels.ne(-100)
                logits = m.hf.lm_head(hidden[sel]).float()
            tot[0] += _ece.aa_nll(logits, b.labels[sel]).sum().double()
            tot[1] += sel.sum()
        tot = self.acc.reduce(tot, reduction="sum")
        m.train()
        return _ece.ece(float(tot[0]), int(tot[1]))

    # -- one optimizer step -----------------------------------------------------------------------
    def _graph_targets(self, step_idx: np.ndarray, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Filled-in labels of every protein of the global step (rank-independent; drawn from their own stream)."""
        fam, sf = [], []
        for i in step_idx:
            f, s = fill_labels(self.train_df["family"][i], self.train_df["superfamily"][i], seq_rng(*key, int(i), 1))
            fam.append(self.vocab.fam_idx.get(f, -1) if f is not None else -1)
            sf.append(self.vocab.sf_idx.get(s, -1) if s is not None else -1)
        return np.array(fam), np.array(sf)

    def train_step(self, step_idx: np.ndarray, key: tuple[int, ...]) -> dict[str, float]:
        cfg = self.cfg
        dev = self.acc.device
        n_masked = float(sum(_ece.n_masked(int(L) - 2, cfg.mask_prob) for L in self.train_lengths[step_idx])) \
            if "mlm" in cfg.objective else 0.0
        fam_c = sf_c = None
        fam_all = sf_all = None
        n_graph = 0.0
        if self.vocab is not None:
            fam_all, sf_all = self._graph_targets(step_idx, key)
            ok = (fam_all >= 0) & (sf_all >= 0)
            n_graph = float(ok.sum())
            fam_c = torch.as_tensor(np.unique(fam_all[ok]), device=dev)
            sf_c = torch.as_tensor(np.unique(sf_all[ok]), device=dev)
        pos = {int(i): j for j, i in enumerate(step_idx)}
        terms = torch.zeros(5, dtype=torch.float64, device=dev)
        micro = shard_step(step_idx, self.world, cfg.grad_accum, self.rank)
        for m, idx in enumerate(micro):
            b = self.collator(idx, key).to(dev)
            if self.vocab is not None:  # labels come from the rank-independent stream
                rows = [pos[int(i)] for i in idx]
                b.family = torch.as_tensor(fam_all[rows], device=dev)
                b.superfamily = torch.as_tensor(sf_all[rows], device=dev)
            sync = contextlib.nullcontext() if m == len(micro) - 1 else self.acc.no_sync(self.model)
            with sync:
                with self.acc.autocast():
                    sums: LossSums = self.model(b.input_ids, b.attention_mask, b.labels, b.family, b.superfamily, fam_c, sf_c)
                out = combine(sums, n_masked, n_graph, cfg.w, cfg.graph_weight)
                self.acc.backward(out.total * self.world)
            terms += torch.stack([out.total, out.mlm, out.family, out.superfamily, out.commu]).detach().double()
        if cfg.max_grad_norm > 0:
            main = [p for g in self.opt.param_groups for p in g["params"]]
            self.acc.clip_grad_norm_(main, cfg.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"terms": terms, "tokens": int(self.train_lengths[step_idx].sum())}

    def sync_superfamilies(self, step: int) -> bool:
        """The paper's delayed family -> superfamily exchange, after optimizer step ``step`` (0-based).

        Superfamily nodes are left out of every step's update; their gradients accumulate, and every
        ``delay_k``-th step one update is applied with the sum, then cleared. Returns whether it ran.
        """
        if self.opt_sf is None or (step + 1) % self.cfg.delay_k:
            return False
        for g in self.opt_sf.param_groups:
            g["lr"] = lr_at(self.cfg, step, g["base_lr"])
        self.opt_sf.step()
        self.opt_sf.zero_grad(set_to_none=True)
        return True

    # -- loop -------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        state = self._resume()
        start_step = state["step"]
        logger = _Logger(self.out, start_step, self.acc.is_main_process)
        if self.acc.is_main_process:
            (self.out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        t0 = time.time()
        elapsed0 = state["elapsed_s"]
        last_save = time.time()
        bar = None
        if cfg.progress and self.acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps or None, initial=start_step, unit="step", dynamic_ncols=True,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0, desc="train")
        history: list[dict[str, float]] = []
        window = torch.zeros(5, dtype=torch.float64, device=self.acc.device)
        win_steps, win_tokens, win_t = 0, 0, time.time()
        step, epoch, sie, tokens = state["step"], state["epoch"], state["step_in_epoch"], state["tokens"]
        last_ece = float("nan")
        stop_reason = ""
        plan = plan_epoch(self.train_lengths, self.tokens_per_step, self.min_seqs, cfg.seed, epoch)
        if not plan:
            raise InputError(f"{cfg.data}: too few training sequences for one step of {self.min_seqs} sequences")
        while not stop_reason:
            if sie >= len(plan):
                epoch, sie = epoch + 1, 0
                plan = plan_epoch(self.train_lengths, self.tokens_per_step, self.min_seqs, cfg.seed, epoch)
            for g in self.opt.param_groups:
                g["lr"] = lr_at(cfg, step, g["base_lr"])
            res = self.train_step(plan[sie], (cfg.seed, epoch, sie))
            self.sync_superfamilies(step)
            step, sie = step + 1, sie + 1
            tokens += res["tokens"]
            window += res["terms"]
            win_steps += 1
            win_tokens += res["tokens"]
            elapsed = elapsed0 + time.time() - t0
            if cfg.max_steps and step >= cfg.max_steps:
                stop_reason = f"max_steps {cfg.max_steps}"
            elif cfg.max_epochs and epoch + sie / len(plan) >= cfg.max_epochs:
                stop_reason = f"max_epochs {cfg.max_epochs}"
            elif cfg.max_time_min and elapsed >= 60 * cfg.max_time_min:
                stop_reason = f"max_time_min {cfg.max_time_min}"
            do_eval = (cfg.eval_every and step % cfg.eval_every == 0) or stop_reason
            if step % cfg.log_every == 0 or do_eval:
                terms = self.acc.reduce(window.clone(), reduction="sum") / win_steps
                now = time.time()
                row = {"step": step, "epoch": round(epoch + sie / len(plan), 4), "tokens": tokens,
                       "elapsed_s": round(elapsed, 1), "lr": self.opt.param_groups[0]["lr"],
                       "loss": float(terms[0]), "mlm": float(terms[1]), "family": float(terms[2]),
                       "superfamily": float(terms[3]), "commu": float(terms[4]),
                       "tokens_per_s": round(win_tokens / max(now - win_t, 1e-9), 1), "ece_heldout": ""}
                if do_eval:
                    last_ece = self.evaluate_ece()
                    row["ece_heldout"] = last_ece
                logger.log(row)
                history.append(row)
                window.zero_()
                win_steps, win_tokens, win_t = 0, 0, time.time()
                if bar is not None:
                    shown = {"loss": f"{row['loss']:.3f}", "tokens/s": f"{row['tokens_per_s']:.0f}"}
                    if not math.isnan(last_ece):
                        shown["held-out ECE (uniform 25)"] = f"{last_ece:.2f}"
                    bar.set_postfix(shown, refresh=False)
            if bar is not None:
                bar.update(1)
            state = {"step": step, "epoch": epoch, "step_in_epoch": sie, "tokens": tokens,
                     "elapsed_s": elapsed0 + time.time() - t0}
            due = (cfg.save_every_steps and step % cfg.save_every_steps == 0) or \
                  (cfg.save_every_min and time.time() - last_save >= 60 * cfg.save_every_min)
            due = bool(self.acc.reduce(torch.tensor(float(due), device=self.acc.device), reduction="sum") > 0)
            if due or stop_reason:
                self._save(state)
                last_save = time.time()
        if bar is not None:
            bar.close()
        logger.close()
        last = history[-1] if history else {}
        metrics = {"ece_heldout": last_ece, "ece_definition": _ece.DEFINITION, "steps": step, "tokens": tokens, "epochs": last.get("epoch", 0.0),
                   "elapsed_s": state["elapsed_s"], "stop_reason": stop_reason,
                   **{k: last[k] for k in ("loss", "mlm", "family", "superfamily", "commu") if k in last}}
        export_dir = None
        if self.acc.is_main_process:
            export_dir = self.out / cfg.export_name
            export_model(self.module, export_dir, config_to_dict(cfg), metrics, self.vocab, info=self._data_info(),
                         training_set=self.training_set)
            print(f"protlens train: stopped at step {step} ({stop_reason}); exported {export_dir}", file=sys.stderr)
        self.acc.wait_for_everyone()
        return TrainResult(self.out, export_dir, step, tokens, metrics, history)

    def _data_info(self) -> dict:
        cfg = self.cfg
        return {"data": str(Path(cfg.data).resolve()), "data_sha256": file_sha256(cfg.data),
                "splits_file": str((self.out / "splits.tsv").resolve()), "split_counts": self.split_counts,
                "train_sequences": len(self.train_df), "cropped_sequences": self.n_cropped,
                "labelled_train_sequences": getattr(self, "n_labelled", 0),
                "families": len(self.vocab.families) if self.vocab else 0,
                "superfamilies": len(self.vocab.superfamilies) if self.vocab else 0,
                "parameters": self.n_params, "processes": self.world,
                "device": str(self.acc.device), "mixed_precision": str(self.acc.mixed_precision)}


def export_model(module: ComproModule, out: Path, conf: dict, metrics: dict, vocab: LabelVocab | None = None,
                 info: dict | None = None, training_set=None) -> Path:
    """HF folder (safetensors + ESM vocab) that load_model reads, plus heads, label vocab, a model card and
    the split and labels of every training-corpus sequence (``training_set``, see protlens._training_set)."""
    from safetensors.torch import save_file

    from ..models import EsmPLM

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf = copy.deepcopy(module.hf).float()
    if conf.get("model") == "scratch" and conf.get("crop"):
        # a model that never saw positions past its crop declares that reach, so embedding windows
        # and mutation-scoring windows stay inside it (EsmPLM.max_residues = positions - 4)
        hf.config.max_position_embeddings = min(hf.config.max_position_embeddings, int(conf["crop"]) + 4)
    if conf.get("export_dtype") == "fp16":
        hf = hf.half()
    EsmPLM(hf, out.name, "protlens train").save_pretrained(tmp)
    if module.use_graph:  # same dtype as the weights: node tables are large (families x dim)
        hd = torch.float16 if conf.get("export_dtype") == "fp16" else torch.float32
        heads = {f"cluster_head.{k}": v.detach().to(hd).cpu().contiguous() for k, v in module.cluster_head.state_dict().items()}
        heads["family_nodes"] = module.family_nodes.detach().to(hd).cpu().contiguous()
        heads["superfamily_nodes"] = module.superfamily_nodes.detach().to(hd).cpu().contiguous()
        save_file(heads, str(tmp / "protlens_heads.safetensors"))
    if vocab is not None:
        (tmp / "label_vocab.json").write_text(json.dumps(vocab.to_dict()))
    if training_set is not None:
        write_training_set(tmp, training_set)
    (tmp / "training_config.json").write_text(json.dumps(conf, indent=2))
    (tmp / "metrics.json").write_text(json.dumps({**metrics, **(info or {})}, indent=2, default=str))
    (tmp / "MODEL_CARD.md").write_text(model_card(out.name, conf, metrics, info or {}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def model_card(name: str, conf: dict, metrics: dict, info: dict) -> str:
    """A short markdown card: data, config, seed and final metrics (all measured by the run itself)."""
    def table(d: dict) -> str:
        return "\n".join(f"| {k} | {v} |" for k, v in d.items())

    return f"""# {name}

ESM-2 architecture trained with `protlens train` (objective `{conf.get("objective", "distillation from " + str(conf.get("teacher", "?")))}`).
Load with `protlens.models.load_model("<this folder>")`; any protlens command accepts it as `--model`.

## Data
| key | value |
|---|---|
{table(info)}

## Final metrics (measured at the end of the run)
| metric | value |
|---|---|
{table(metrics)}

`ece_heldout` is the {_ece.DEFINITION}, on the held-out sequences listed as `ece_holdout` in the
splits file (fixed masks).

## Configuration (seed {conf.get('seed', '?')}, split seed {conf.get('split_seed', '?')})
```json
{json.dumps(conf, indent=2)}
```
"""


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a run described by ``config``; writes checkpoints, logs and an HF export."""
    return Trainer(config).fit()
