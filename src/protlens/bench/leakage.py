"""Keep the benchmarked models' training data out of the test sets.

A model ``protlens train`` or ``protlens distill`` exported carries ``training_set.tsv.gz``: the split
of every corpus sequence, with its labels (protlens._training_set). For one benchmark run the
proteins to keep out are the union of the ``train`` splits of all models given (every model is then
scored on the same items, so the rows stay comparable). Proteins are matched by id and by sequence
(SCOP40 ids differ from the CATH ids of the same chains). Pools are filtered *before* they are
subsampled, so a task whose sampled set would be mostly training data (the CATH pool, whose
superfamilies were trained on) is drawn from the remaining proteins: in practice the held-out
superfamilies and the held-out ECE split.

Tasks whose labels are not training labels (mutation fitness, activity, protein interactions) are
not filtered; the report says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._training_set import read_training_set, sequence_key
from ..models import BUNDLED, bundled_path

#: Which filtered pool each task draws from (for the per-task table of the report).
TASK_POOLS = {"ece": ["ece"], "family": ["enzymes", "cath"], "function": ["enzymes"], "similarity": ["cath"],
              "figures": ["cath"], "homology": ["scop40"], "mutation": [], "activity": [], "ppi": []}
NOT_FILTERED = "not filtered: its labels (fitness / interactions) are not training labels"


def training_table(name: str) -> tuple[pd.DataFrame | None, str]:
    """(training table or None, one-line status) of a model given as on the command line."""
    if name.startswith("random:"):
        return None, "untrained (random init): nothing to exclude"
    if re.fullmatch(r"kmer\d*", name):
        return None, "untrained (k-mer profile): nothing to exclude"
    folder = bundled_path(name) if name in BUNDLED else Path(name).expanduser()
    table = read_training_set(folder) if folder.is_dir() else None
    if table is None:
        return None, "leakage unknown: the model carries no training metadata (training_set.tsv.gz)"
    n = int((table["split"] == "train").sum())
    return table, f"trained: its {n} training proteins are excluded from the filtered tasks"


@dataclass
class Leakage:
    """The union of the models' training proteins, and the held-out ECE split they share."""

    status: dict[str, str]
    train_ids: set[str] = field(default_factory=set)
    train_keys: set[str] = field(default_factory=set)
    ece_holdout: list[str] | None = None

    @classmethod
    def from_models(cls, models: Sequence[str]) -> Leakage:
        status, tables = {}, []
        for m in models:
            table, status[m] = training_table(m)
            if table is not None:
                tables.append(table)
        out = cls(status)
        for t in tables:
            train = t[t["split"] == "train"]
            out.train_ids |= set(train["id"])
            out.train_keys |= set(train["sequence_sha1"])
        if tables:  # ids held out for ECE by every trained model and trained on by none
            common = set.intersection(*(set(t.loc[t["split"] == "ece_holdout", "id"]) for t in tables))
            out.ece_holdout = [i for i in tables[0]["id"] if i in common and i not in out.train_ids]
        return out

    def is_training(self, ids: Sequence[str], seqs: Sequence[str]) -> np.ndarray:
        """True where a protein is in some model's training split (by id or by sequence)."""
        return np.array([i in self.train_ids or sequence_key(s) in self.train_keys for i, s in zip(ids, seqs)],
                        dtype=bool)


def drop_training(ctx, pool: str, frame: pd.DataFrame, id_col: str = "id", seq_col: str = "sequence") -> pd.DataFrame:
    """``frame`` without the training proteins of the run's models; records (excluded, kept) for ``pool``."""
    if ctx.leakage is None or not (ctx.leakage.train_ids or ctx.leakage.train_keys):
        return frame
    hit = ctx.leakage.is_training(frame[id_col].tolist(), frame[seq_col].tolist())
    kept = frame[~hit].reset_index(drop=True)
    ctx.excluded[pool] = (int(hit.sum()), len(kept))
    return kept


def report_lines(ctx, models: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """The results.md section: each model's status, then per task the items excluded."""
    lines = ["### Training data kept out of the test sets (leakage)", ""]
    if ctx.leakage is None:
        return lines + ["Exclusion was switched off (`--keep-training-data`): models may be scored on their own "
                        "training proteins and labels.", ""]
    lines += [f"- {m}: {s}" + ("" if m in models else " (not scored here; excluded so the pools match)")
              for m, s in ctx.leakage.status.items()]
    if ctx.leakage.ece_holdout is not None and "ece" in tasks and ctx.heldout is None:
        lines.append(f"- ECE held-out set: the trained models' own `ece_holdout` split "
                     f"({len(ctx.leakage.ece_holdout)} sequences)")
    lines += ["", "| task | pool | items excluded (training data) | items left to sample from |", "|---|---|---|---|"]
    for t in tasks:
        pools = TASK_POOLS.get(t, [])
        if not pools:
            lines.append(f"| {t} | – | {NOT_FILTERED} | – |")
        for p in pools:
            ex, kept = ctx.excluded.get(p, (0, None))
            lines.append(f"| {t} | {p} | {ex} | {'–' if kept is None else kept} |")
    return lines + [""]
