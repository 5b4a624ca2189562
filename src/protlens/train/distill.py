"""``protlens distill``: TinyBERT-style knowledge distillation of a trained model into a smaller ESM-2.

Three terms, as in TinyBERT (Jiao et al. 2020) and the ComproESM student:
- hidden states: MSE between student layer i (through one learned linear projection to the teacher
  width) and teacher layer g(i), with the uniform map g(i) = i * L_teacher / L_student (0 = embeddings);
- attention maps: MSE between head-averaged attention probabilities of the same layer pairs (heads
  are averaged because student and teacher may have different head counts);
- soft MLM logits: T^2 * KL(teacher || student) of temperature-T softmaxes at the masked positions.
The student is exported like any ``protlens train`` run (HF folder + model card), so load_model reads it.

Splits: when the teacher carries its training table (``training_set.tsv.gz``, see
protlens._training_set), every distillation sequence keeps the teacher's split (matched by id, else by
sequence): the student's held-out sets are the teacher's, and the teacher's held-out proteins never
become student training data. Sequences the teacher never listed are training data for the student.
A teacher without that table gets a fresh seeded split and a warning. Held-out ECE: protlens._ece.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _ece
from .._progress import Steps, track
from .._training_set import read_training_set, sequence_key, training_frame
from ..errors import InputError
from .config import DistillConfig, config_to_dict
from .data import Collator, eval_batches, file_sha256, make_splits, plan_epoch, read_corpus
from .module import ComproModule
from .trainer import TrainResult, export_model


@dataclass
class DistillLoss:
    """Named terms of one distillation step (``total`` is their weighted sum)."""

    total: torch.Tensor
    hidden: torch.Tensor
    attention: torch.Tensor
    logits: torch.Tensor


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for student layers 0..L_s (0 = embeddings): uniform, last maps to last."""
    if student_layers > teacher_layers:
        raise InputError(f"student has {student_layers} layers, more than the teacher's {teacher_layers}")
    return [round(i * teacher_layers / student_layers) for i in range(student_layers + 1)]


class Distiller(nn.Module):
    """Student + the learned hidden-state projection; the frozen teacher is held outside the graph."""

    def __init__(self, student, teacher_hidden: int, mapping: list[int]) -> None:
        super().__init__()
        self.student = student
        self.proj = nn.Linear(student.config.hidden_size, teacher_hidden)
        self.mapping = mapping
        contact = student.esm.contact_head
        contact.requires_grad_(False)

    def forward(self, input_ids, attention_mask, labels, t_hidden, t_attn, t_logits, cfg: DistillConfig) -> DistillLoss:
        out = self.student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                           output_attentions=True)
        keep = attention_mask.unsqueeze(-1).to(out.logits.dtype)
        n_tok = keep.sum()
        hid = sum(((self.proj(out.hidden_states[i]) - t_hidden[i]) ** 2 * keep).sum() / (n_tok * t_hidden[i].shape[-1])
                  for i in range(len(self.mapping)))
        pair = attention_mask[:, None, :, None] & attention_mask[:, None, None, :]
        att = sum((((out.attentions[i - 1].mean(1, keepdim=True) - t_attn[i - 1]) ** 2) * pair).sum() / pair.sum()
                  for i in range(1, len(self.mapping)))
        sel = labels.ne(-100)
        T = cfg.temperature
        soft = F.kl_div(F.log_softmax(out.logits[sel].float() / T, -1), F.log_softmax(t_logits[sel].float() / T, -1),
                        log_target=True, reduction="batchmean") * T * T
        total = cfg.hidden_weight * hid + cfg.attn_weight * att + cfg.logit_weight * soft
        return DistillLoss(total, hid, att, soft)


@torch.no_grad()
def _teacher_targets(teacher, b, mapping: list[int]):
    out = teacher(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True, output_attentions=True)
    hidden = [out.hidden_states[j] for j in mapping]
    attn = [out.attentions[j - 1].mean(1, keepdim=True) for j in mapping[1:]]
    return hidden, attn, out.logits


@torch.no_grad()
def masked_ece(hf, collator: Collator, batches: list[np.ndarray], key: tuple[int, ...], device,
               progress: str | None = None) -> float:
    """Masked-token ECE (protlens._ece) of an HF ``EsmForMaskedLM`` on fixed held-out batches.

    ``collator`` must mask every picked residue (``all_mask=True``); ``progress`` names a progress bar.
    """
    hf.eval()
    tot, n = 0.0, 0
    for idx in track(batches, progress or "", enabled=progress is not None):
        b = collator(idx, key, random_crop=False).to(device)
        logits = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        sel = b.labels.ne(-100)
        tot += float(_ece.aa_nll(logits[sel], b.labels[sel]).double().sum())
        n += int(sel.sum())
    return _ece.ece(tot, n)


def teacher_splits(df, teacher_source: str, seed: int, ece_frac: float):
    """(split per sequence of ``df``, where it came from): the teacher's own split where it exports one."""
    import pandas as pd

    from ..models import BUNDLED, bundled_path

    folder = bundled_path(teacher_source) if teacher_source in BUNDLED else Path(teacher_source)
    table = read_training_set(folder) if folder.is_dir() else None
    if table is None:
        print(f"protlens distill: warning: teacher '{teacher_source}' carries no training table; the student's "
              "split is drawn afresh, so its held-out sequences may include the teacher's training data",
              file=sys.stderr)
        return make_splits(df, seed, ece_frac), "fresh seeded split (teacher exports none)"
    by_id = dict(zip(table["id"], table["split"]))
    by_seq = dict(zip(table["sequence_sha1"], table["split"]))
    split = [by_id.get(i) or by_seq.get(sequence_key(s)) or "train" for i, s in zip(df["id"], df["sequence"])]
    known = sum(i in by_id or sequence_key(s) in by_seq for i, s in zip(df["id"], df["sequence"]))
    return pd.Series(split, index=df.index, dtype=object), (
        f"teacher's split ({known} of {len(df)} sequences listed by the teacher; the rest train)")


def distill(config: DistillConfig) -> TrainResult:
    """Train a student to mimic ``config.teacher``; export it as a normal protlens checkpoint."""
    from accelerate import Accelerator
    from transformers import EsmForMaskedLM

    from ..models import EsmPLM, esm2_config, load_model

    cfg = config
    if not cfg.teacher or not cfg.data:
        raise InputError("distill needs 'teacher' (a model) and 'data' (a TSV/CSV of sequences)")
    if cfg.student_hidden % cfg.student_heads:
        raise InputError(f"student_hidden {cfg.student_hidden} is not divisible by student_heads {cfg.student_heads}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    plm = load_model(cfg.teacher)
    if not isinstance(plm, EsmPLM):
        raise InputError(f"teacher '{cfg.teacher}' is not a neural model; distillation needs an ESM-2 teacher")
    teacher = plm.hf.to(acc.device).eval()
    teacher.set_attn_implementation("eager")
    teacher.requires_grad_(False)
    mapping = layer_map(cfg.student_layers, teacher.config.num_hidden_layers)
    torch.manual_seed(cfg.seed)
    student = EsmForMaskedLM(esm2_config(cfg.student_layers, cfg.student_hidden, cfg.student_heads))
    student.set_attn_implementation("eager")
    model = Distiller(student, teacher.config.hidden_size, mapping)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = acc.prepare(model, opt)

    df = read_corpus(cfg.data)
    split, split_source = teacher_splits(df, cfg.teacher, cfg.split_seed, cfg.ece_holdout_frac)
    tr = df[split.eq("train").to_numpy()].reset_index(drop=True)
    if tr.empty:
        raise InputError(f"{cfg.data}: no sequence is in the teacher's training split; nothing to distill on")
    ho = df[split.eq("ece_holdout").to_numpy()].reset_index(drop=True).iloc[: cfg.eval_max_seqs]
    col = Collator(tr["sequence"].tolist(), [[]] * len(tr), [[]] * len(tr), None, cfg.crop, cfg.mask_prob)
    hcol = Collator(ho["sequence"].tolist(), [[]] * len(ho), [[]] * len(ho), None, cfg.crop, cfg.mask_prob,
                    all_mask=True)
    lengths = np.minimum(tr["sequence"].str.len().to_numpy(), cfg.crop) + 2
    hbatches = eval_batches(np.minimum(ho["sequence"].str.len().to_numpy(), cfg.crop) + 2, cfg.max_tokens) if len(ho) else []
    world, rank = acc.num_processes, acc.process_index
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step, epoch, sie, tokens = 0, 0, 0, 0
    plan = plan_epoch(lengths, cfg.max_tokens * cfg.grad_accum * world, world * cfg.grad_accum, cfg.seed, epoch)
    if not plan:
        raise InputError(f"{cfg.data}: too few training sequences for one distillation step")
    t0 = time.time()
    log = open(out_dir / "metrics.csv", "w") if acc.is_main_process else None
    if log:
        log.write("step,tokens,elapsed_s,loss,hidden,attention,logits\n")
    terms = torch.zeros(4, dtype=torch.float64)
    while True:
        if sie >= len(plan):
            epoch, sie = epoch + 1, 0
            plan = plan_epoch(lengths, cfg.max_tokens * cfg.grad_accum * world, world * cfg.grad_accum, cfg.seed, epoch)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        micro = np.array_split(plan[sie], world * cfg.grad_accum)
        for m in range(cfg.grad_accum):
            idx = micro[m * world + rank]
            b = col(idx, (cfg.seed, epoch, sie)).to(acc.device)
            th, ta, tl = _teacher_targets(teacher, b, mapping)
            loss = model(b.input_ids, b.attention_mask, b.labels, th, ta, tl, cfg)
            acc.backward(loss.total / cfg.grad_accum)
            terms += torch.stack([loss.total, loss.hidden, loss.attention, loss.logits]).detach().double().cpu() / cfg.grad_accum
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, sie = step + 1, sie + 1
        tokens += int(lengths[plan[sie - 1]].sum())
        elapsed = time.time() - t0
        done = step >= cfg.max_steps or (cfg.max_time_min and elapsed >= 60 * cfg.max_time_min)
        if log and (step % cfg.log_every == 0 or done):
            t = terms / (cfg.log_every if step % cfg.log_every == 0 else (step % cfg.log_every))
            log.write(f"{step},{tokens},{elapsed:.1f},{t[0]:.6e},{t[1]:.6e},{t[2]:.6e},{t[3]:.6e}\n")
            log.flush()
            if cfg.progress:
                print(f"distill step {step}/{cfg.max_steps}: loss {t[0]:.4f} (hidden MSE {t[1]:.4f}, attention MSE "
                      f"{t[2]:.2e}, soft-logit KL {t[3]:.4f}), {tokens / max(elapsed, 1e-9):.0f} tokens/s, "
                      f"{elapsed:.0f} s elapsed", file=sys.stderr)
        if step % cfg.log_every == 0:
            terms.zero_()
        if done:
            break
    if log:
        log.close()
    unwrapped = acc.unwrap_model(model)
    key = (cfg.split_seed, 99)
    bars = acc.is_main_process and cfg.progress
    ece_of = {name: masked_ece(m, hcol, hbatches, key, acc.device, f"held-out ECE, {name}" if bars else None)
              if hbatches else float("nan") for name, m in (("student", unwrapped.student), ("teacher", teacher))}
    metrics = {"steps": step, "tokens": tokens, "elapsed_s": round(time.time() - t0, 1),
               "ece_heldout": ece_of["student"], "teacher_ece_heldout": ece_of["teacher"],
               "ece_definition": _ece.DEFINITION, "teacher": cfg.teacher, "layer_map": mapping}
    export_dir = out_dir / "export"
    if acc.is_main_process:
        unwrapped.student.set_attn_implementation("sdpa")
        info = {"data": str(Path(cfg.data).resolve()), "data_sha256": file_sha256(cfg.data),
                "train_sequences": len(tr), "split_source": split_source,
                "split_counts": split.value_counts().to_dict(), "teacher_weights": plm.weights_hash,
                "parameters": sum(p.numel() for p in unwrapped.student.parameters())}
        with Steps(bars)("export", f"writing the student to {export_dir}"):
            export_model(ComproModule(unwrapped.student, objective="mlm"), export_dir, config_to_dict(cfg), metrics,
                         info=info, training_set=training_frame(df["id"], split, df["family"], df["superfamily"],
                                                                df["sequence"]))
    acc.wait_for_everyone()
    return TrainResult(out_dir, export_dir, step, tokens, metrics)
