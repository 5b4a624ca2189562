"""Protein-protein interaction (ComproESM appendix G): does a pair interact, from frozen embeddings?

Two datasets: STRING SHS27k edges (any interaction type) as positives against as many random
non-edges among the same proteins, and the balanced yeast set of Guo et al. (2008). Each protein is
embedded once; a pair is represented symmetrically as [a * b, |a - b|] and classified by a
one-hidden-layer network. Two splits, both reported: a random 9:1 split of pairs (as published; a
protein of a test pair is usually also in training pairs, so this leaks) and a protein-disjoint
split (no test protein appears in any training pair), so users see how much of the score is leak.

Subsampling: pairs are drawn in a seeded random order and kept while their proteins fit in a budget
of ``ppi_proteins`` (``yeast_proteins``) proteins of at most ``max_len`` residues.

Data: SHS27k from GNN-PPI (github.com/lvguofeng/GNN_PPI), yeast pairs from PIPR
(github.com/muhaochen/seq_ppi).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.neural_network import MLPClassifier

from ._common import BenchModel, Context, Row, head

TASK = "ppi"
TEST_FRACTION = 0.1
#: Holding out this fraction of proteins leaves about 10% of the pairs with both proteins in test.
DISJOINT_PROTEIN_FRACTION = float(np.sqrt(TEST_FRACTION))


def pair_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Order-independent pair representation."""
    return np.hstack([a * b, np.abs(a - b)])


def _read_seqs(path) -> dict[str, str]:
    df = pd.read_csv(path, sep="\t", header=None, names=["id", "sequence"], dtype=str)
    return dict(zip(df["id"], df["sequence"].str.upper()))


def sample_pairs(pairs: list[tuple[str, str]], seqs: dict[str, str], budget: int, max_len: int,
                 rng: np.random.Generator) -> list[tuple[str, str]]:
    """Pairs (in seeded order) whose proteins fit a budget of ``budget`` distinct proteins."""
    proteins: set[str] = set()
    kept = []
    for i in rng.permutation(len(pairs)):
        a, b = pairs[i]
        if a == b or a not in seqs or b not in seqs or max(len(seqs[a]), len(seqs[b])) > max_len:
            continue
        new = {a, b} - proteins
        if len(proteins) + len(new) > budget:
            continue
        proteins |= new
        kept.append((a, b))
    return kept


def _assign_splits(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    test = np.zeros(len(df), dtype=bool)
    for lab in (0, 1):
        idx = rng.permutation(np.flatnonzero(df["label"].to_numpy() == lab))
        test[idx[: max(1, round(TEST_FRACTION * len(idx)))]] = True
    proteins = sorted(set(df["a"]) | set(df["b"]))
    held = set(rng.choice(proteins, size=max(2, round(DISJOINT_PROTEIN_FRACTION * len(proteins))), replace=False))
    in_a, in_b = df["a"].isin(held), df["b"].isin(held)
    disjoint = np.where(in_a & in_b, "test", np.where(~in_a & ~in_b, "train", "unused"))
    return df.assign(random=np.where(test, "test", "train"), disjoint=disjoint)


def shs27k(ctx: Context) -> tuple[pd.DataFrame, dict[str, str]]:
    seqs = _read_seqs(ctx.data("ppi", "shs27k_sequences.tsv"))
    act = pd.read_csv(ctx.data("ppi", "shs27k_actions.tsv"), sep="\t", usecols=["item_id_a", "item_id_b"])
    edges = sorted({tuple(sorted(p)) for p in zip(act["item_id_a"], act["item_id_b"]) if p[0] != p[1]})
    rng = ctx.rng(f"{TASK}/shs27k")
    pos = sample_pairs(edges, seqs, ctx.sizes["ppi_proteins"], ctx.sizes["max_len"], rng)
    proteins = sorted({p for e in pos for p in e})
    known = set(edges)
    neg: set[tuple[str, str]] = set()
    for _ in range(100 * len(pos)):
        if len(neg) >= len(pos):
            break
        a, b = sorted(rng.choice(proteins, size=2, replace=False))
        if (a, b) not in known:
            neg.add((a, b))
    df = pd.DataFrame(pos + sorted(neg), columns=["a", "b"]).assign(label=[1] * len(pos) + [0] * len(neg))
    return _assign_splits(df, rng), seqs


def yeast(ctx: Context) -> tuple[pd.DataFrame, dict[str, str]]:
    seqs = _read_seqs(ctx.data("ppi", "yeast_guo_sequences.tsv"))
    raw = pd.read_csv(ctx.data("ppi", "yeast_guo_pairs.tsv"), sep="\t", header=None, names=["a", "b", "label"],
                      dtype={"a": str, "b": str, "label": int})
    label = {tuple(sorted(p)): y for p, y in zip(zip(raw["a"], raw["b"]), raw["label"])}
    rng = ctx.rng(f"{TASK}/yeast")
    kept = sample_pairs(sorted(label), seqs, ctx.sizes["yeast_proteins"], ctx.sizes["max_len"], rng)
    df = pd.DataFrame(kept, columns=["a", "b"]).assign(label=[label[p] for p in kept])
    return _assign_splits(df, rng), seqs


def evaluate(x: np.ndarray, y: np.ndarray, split: np.ndarray, seed: int, pca_cap: int = 0) -> tuple[float, float, int]:
    """(accuracy, AUROC, n test) of the pair classifier trained on ``split == 'train'``."""
    tr, te = split == "train", split == "test"
    if len(np.unique(y[tr])) < 2 or len(np.unique(y[te])) < 2:
        return float("nan"), float("nan"), int(te.sum())
    clf = head(MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=200, early_stopping=len(y[tr]) >= 50,
                             random_state=seed), seed, pca_cap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[tr], y[tr])
    prob = clf.predict_proba(x[te])[:, 1]
    return (float(accuracy_score(y[te], prob >= 0.5)), float(roc_auc_score(y[te], prob)), int(te.sum()))


def run(ctx: Context, model: BenchModel) -> list[Row]:
    rows = []
    for name, build in (("shs27k", shs27k), ("yeast", yeast)):
        df, seqs = build(ctx)
        ctx.write_split(f"{TASK}_{name}", df)
        proteins = sorted(set(df["a"]) | set(df["b"]))
        emb = dict(zip(proteins, model.pooled([seqs[p] for p in proteins])))
        x = pair_features(np.stack([emb[a] for a in df["a"]]), np.stack([emb[b] for b in df["b"]]))
        y = df["label"].to_numpy()
        for split in ("random", "disjoint"):
            acc, auc, n = evaluate(x, y, df[split].to_numpy(), ctx.seed, ctx.pca_cap)
            note = f"{len(proteins)} proteins, {len(df)} pairs"
            rows += [Row(TASK, f"{name}_{split}_acc", acc, n, note), Row(TASK, f"{name}_{split}_auroc", auc, n)]
    return rows
