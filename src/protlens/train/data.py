"""Training data: corpus reading, seeded splits, label vocabularies and filling, MLM masking, token-budget steps.

Every random choice made while reading a sequence (crop window, masked positions, filled-in label) is
drawn from a generator seeded by ``(seed, epoch, step, sequence index)``. A run therefore sees the
same batches whether it was interrupted and resumed, and whatever the number of processes or
micro-batches the global step was split into.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._ece import n_masked
from .._training_set import rename_repeated_ids
from ..errors import InputError
from ..models import ESM_ALPHABET

LABEL_SEP = ";"  #: several labels of one protein in one cell: "cath:1.10.8.10;cath:3.40.50.300"
#: token ids of the 20 standard residues (random replacements in MLM are drawn from these)
STANDARD_AA = np.array([ESM_ALPHABET.tok_to_idx[a] for a in "LAGVSERTIDPKQNFYMHWC"], dtype=np.int64)


def read_corpus(path: str | Path, drop_label_prefixes: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Read ``id, sequence[, family, superfamily]`` (TSV or CSV); labels are lists, empty where unknown."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"training data {path} does not exist")
    sep = "\t" if path.suffix in {".tsv", ".tab"} or path.name.endswith((".tsv.gz", ".tab.gz")) else ","
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    for col in ("id", "sequence"):
        if col not in df.columns:
            raise InputError(f"{path}: missing column '{col}' (expected id, sequence, family, superfamily)")
    if df.empty:
        raise InputError(f"{path}: no sequences")
    dup = df["id"].duplicated()
    if dup.any():  # e.g. one UniProt id from two sources with different sequences: keep both, rename
        print(f"protlens train: note: {path}: {int(dup.sum())} repeated ids (first '{df['id'][dup].iloc[0]}'); "
              "later copies are renamed id#2, id#3, ... in the splits file", file=sys.stderr)
        df["id"] = rename_repeated_ids(df["id"])
    df["sequence"] = df["sequence"].str.strip().str.upper()
    empty = df["id"][df["sequence"].str.len() == 0]
    if len(empty):
        raise InputError(f"{path}: record '{empty.iloc[0]}' has an empty sequence")
    bad = df["sequence"].str.contains(r"[^A-Z]", regex=True)
    if bad.any():
        raise InputError(f"{path}: record '{df['id'][bad].iloc[0]}' has characters other than letters")
    for col in ("family", "superfamily"):
        raw = df[col] if col in df.columns else pd.Series([""] * len(df), index=df.index)
        df[col] = [
            [t for t in (x.strip() for x in cell.split(LABEL_SEP)) if t and not t.startswith(tuple(drop_label_prefixes))]
            for cell in raw
        ]
    return df.reset_index(drop=True)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_splits(df: pd.DataFrame, seed: int, ece_frac: float, label_frac: float = 0.0,
                label_column: str = "family", label_prefix: str = "") -> pd.Series:
    """Per-sequence split: ``label_holdout`` (a held-out label group), ``ece_holdout`` or ``train``.

    Label groups are held out first (all their sequences leave training), then ``ece_frac`` of the
    remaining sequences are held out for masked-token ECE. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=df.index, dtype=object)
    if label_frac > 0:
        groups = sorted({lab for labs in df[label_column] for lab in labs if lab.startswith(label_prefix)})
        if not groups:
            raise InputError(f"label_holdout_frac > 0 but no '{label_column}' labels start with '{label_prefix}'")
        held = set(rng.choice(groups, size=int(round(label_frac * len(groups))), replace=False).tolist())
        in_held = df[label_column].map(lambda labs: any(lab in held for lab in labs))
        split[in_held] = "label_holdout"
    rest = np.flatnonzero((split == "train").to_numpy())
    n_ece = int(round(ece_frac * len(rest)))
    split.iloc[rng.choice(rest, size=n_ece, replace=False)] = "ece_holdout"
    return split


@dataclass
class LabelVocab:
    """Family and superfamily node names; node ids index the rows of the node tables."""

    families: list[str]
    superfamilies: list[str]

    def __post_init__(self) -> None:
        self.fam_idx = {n: i for i, n in enumerate(self.families)}
        self.sf_idx = {n: i for i, n in enumerate(self.superfamilies)}

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "LabelVocab":
        """Every label that can be a family (its own, or a superfamily filled in) and vice versa."""
        fams = {x for labs in df["family"] for x in labs}
        sfs = {x for labs in df["superfamily"] for x in labs}
        fam_only_rows = df["superfamily"].map(len).eq(0)
        sf_only_rows = df["family"].map(len).eq(0)
        sfs |= {x for labs in df.loc[fam_only_rows, "family"] for x in labs}
        fams |= {x for labs in df.loc[sf_only_rows, "superfamily"] for x in labs}
        return cls(sorted(fams), sorted(sfs))

    def to_dict(self) -> dict[str, list[str]]:
        return {"families": self.families, "superfamilies": self.superfamilies}


def drop_small_families(df: pd.DataFrame, min_size: int) -> tuple[pd.DataFrame, int]:
    """Remove family labels with fewer than ``min_size`` members (they then get filled from superfamily)."""
    if min_size <= 1:
        return df, 0
    counts = pd.Series([x for labs in df["family"] for x in labs]).value_counts()
    small = set(counts.index[counts < min_size])
    df = df.copy()
    df["family"] = [[x for x in labs if x not in small] for labs in df["family"]]
    return df, len(small)


def fill_labels(families: list[str], superfamilies: list[str], rng: np.random.Generator) -> tuple[str | None, str | None]:
    """The published rule: one label per level per read; a missing level gets one of the other's labels.

    Several labels at one level: one is drawn at random each read. Neither level known: (None, None),
    and the protein contributes to the MLM loss only.
    """
    fam = families[rng.integers(len(families))] if families else None
    sf = superfamilies[rng.integers(len(superfamilies))] if superfamilies else None
    if fam is None and sf is not None:
        fam = superfamilies[rng.integers(len(superfamilies))]
    elif sf is None and fam is not None:
        sf = families[rng.integers(len(families))]
    return fam, sf


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.15,
                all_mask: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """BERT corruption of residue ids: pick ``mask_prob`` of them (at least one); 80% <mask>, 10% random, 10% kept.

    ``all_mask`` replaces every picked residue by <mask> (evaluation: masked-token ECE, protlens._ece). Returns (corrupted ids, targets with -100 where not picked).
    """
    n = len(ids)
    n_pick = n_masked(n, mask_prob)
    pos = rng.choice(n, size=n_pick, replace=False)
    labels = np.full(n, -100, dtype=np.int64)
    labels[pos] = ids[pos]
    out = ids.copy()
    u = np.zeros(n_pick) if all_mask else rng.random(n_pick)
    out[pos[u < 0.8]] = ESM_ALPHABET.mask_idx
    rand_pos = pos[(u >= 0.8) & (u < 0.9)]
    out[rand_pos] = rng.choice(STANDARD_AA, size=len(rand_pos))
    return out, labels


def crop_window(length: int, crop: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """A ``crop``-residue window: random start when ``rng`` is given, else the first ``crop`` residues."""
    if length <= crop:
        return 0, length
    start = int(rng.integers(0, length - crop + 1)) if rng is not None else 0
    return start, start + crop


def seq_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


@dataclass
class Batch:
    """One micro-batch of tensors ready for :class:`~protlens.train.module.ComproModule`."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T] bool
    labels: torch.Tensor  # [B, T] MLM targets, -100 elsewhere
    family: torch.Tensor  # [B] node id, -1 = no label
    superfamily: torch.Tensor  # [B]
    n_tokens: int  # residues + BOS/EOS (unpadded)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                     self.family.to(device), self.superfamily.to(device), self.n_tokens)


class Collator:
    """Turns dataset indices into a :class:`Batch` (crop, BOS/EOS, masking, label filling)."""

    def __init__(self, sequences: list[str], families: list[list[str]], superfamilies: list[list[str]],
                 vocab: LabelVocab | None, crop: int, mask_prob: float = 0.15, mlm: bool = True,
                 all_mask: bool = False) -> None:
        self.sequences = sequences
        self.families = families
        self.superfamilies = superfamilies
        self.vocab = vocab
        self.crop = crop
        self.mask_prob = mask_prob
        self.mlm = mlm
        self.all_mask = all_mask

    def __call__(self, indices: list[int] | np.ndarray, key: tuple[int, ...], random_crop: bool = True) -> Batch:
        """``key`` (e.g. (seed, epoch, step)) plus the sequence index seeds every random choice."""
        rows_in, rows_lab, fam, sf = [], [], [], []
        for i in indices:
            rng = seq_rng(*key, int(i))
            seq = self.sequences[i]
            a, b = crop_window(len(seq), self.crop, rng if random_crop else None)
            ids = ESM_ALPHABET.encode(seq[a:b])
            if self.mlm:
                ids_in, lab = mask_tokens(ids, rng, self.mask_prob, self.all_mask)
            else:
                ids_in, lab = ids, np.full(len(ids), -100, dtype=np.int64)
            rows_in.append(ids_in)
            rows_lab.append(lab)
            f, s = fill_labels(self.families[i], self.superfamilies[i], rng) if self.vocab else (None, None)
            fam.append(self.vocab.fam_idx.get(f, -1) if f is not None else -1)
            sf.append(self.vocab.sf_idx.get(s, -1) if s is not None else -1)
        width = max(len(r) for r in rows_in) + 2
        B = len(rows_in)
        toks = np.full((B, width), ESM_ALPHABET.pad_idx, dtype=np.int64)
        labels = np.full((B, width), -100, dtype=np.int64)
        for r, (ids_in, lab) in enumerate(zip(rows_in, rows_lab)):
            n = len(ids_in)
            toks[r, 0] = ESM_ALPHABET.cls_idx
            toks[r, 1 : n + 1] = ids_in
            toks[r, n + 1] = ESM_ALPHABET.eos_idx
            labels[r, 1 : n + 1] = lab
        t = torch.from_numpy(toks)
        return Batch(t, t.ne(ESM_ALPHABET.pad_idx), torch.from_numpy(labels), torch.tensor(fam, dtype=torch.long),
                     torch.tensor(sf, dtype=torch.long), int(sum(len(r) + 2 for r in rows_in)))


def plan_epoch(lengths: np.ndarray, tokens_per_step: int, min_seqs: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Split one epoch into optimizer steps of at most ``tokens_per_step`` padded tokens.

    fair-esm style: shuffle, sort by length within windows of ~100 steps' worth, cut greedily so that
    ``n_seqs * longest <= budget``, shuffle the steps. Each step is sorted by length and has at least
    ``min_seqs`` sequences (one per process and micro-batch); a short remainder is dropped.
    """
    rng = np.random.default_rng([seed, epoch, 7])
    perm = rng.permutation(len(lengths))
    window = max(1, int(100 * tokens_per_step / max(1.0, float(np.mean(lengths)))))
    steps: list[np.ndarray] = []
    for w0 in range(0, len(perm), window):
        chunk = perm[w0 : w0 + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        cur: list[int] = []
        longest = 0
        for idx in chunk:
            L = int(lengths[idx])
            if cur and (len(cur) + 1) * max(longest, L) > tokens_per_step:
                if len(cur) >= min_seqs:
                    steps.append(np.array(cur))
                    cur, longest = [], 0
            cur.append(int(idx))
            longest = max(longest, L)
        if len(cur) >= min_seqs:
            steps.append(np.array(cur))
    order = rng.permutation(len(steps))
    return [steps[i] for i in order]


def shard_step(step: np.ndarray, world: int, grad_accum: int, rank: int) -> list[np.ndarray]:
    """This process' micro-batches of one global step (contiguous length-sorted chunks, equal counts)."""
    chunks = np.array_split(step, world * grad_accum)
    return [chunks[m * world + rank] for m in range(grad_accum)]


def eval_batches(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Deterministic length-sorted batches of held-out sequences for ECE."""
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = []
    cur: list[int] = []
    for idx in order:
        if cur and (len(cur) + 1) * int(lengths[idx]) > max_tokens:
            out.append(np.array(cur))
            cur = []
        cur.append(int(idx))
    if cur:
        out.append(np.array(cur))
    return out
