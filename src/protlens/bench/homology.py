"""Remote homology detection on SCOP40 (ComproESM appendix I, Table 8; Rives et al. 2021 protocol).

Every domain queries all others by cosine similarity of pooled embeddings. Superfamily level:
positives share the superfamily but not the family, negatives are other superfamilies, same-family
domains are left out of the ranking. Fold level: positives share the fold but not the
superfamily, negatives are other folds, same-superfamily domains left out. Hit@k = fraction of
queries (with at least one positive) that have a positive among their k best-ranked domains.
As in the paper, Rossmann-like folds (c.2-c.5, c.27, c.28, c.30, c.31) and 4-8-bladed propellers
(b.66-b.70) are excluded and only the all-alpha class is used (published for ESM-2 12-layer:
SF-Hit@10 47.04%, F-Hit@10 14.67%); by default ``scop_domains`` of its domains are sampled,
which removes positives and so lowers Hit@k relative to the full class.
``labelled_hit_at_k`` is the same measure on any labelled set (both SCOP levels use it, and so
does the held-out CATH test of the protlens-small model card, benchmarks/model_card.py).

Data: ``homology/scop40.fasta`` (SCOPe 40% identity set of the Foldseek benchmark, ``>d1vkya_/e.53.1.1``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import BenchModel, Context, Row, cosine_matrix, read_fasta_dict, sample_at_most
from .leakage import drop_training

TASK = "homology"
CLASSES = ("a",)
EXCLUDED_FOLDS = {"c.2", "c.3", "c.4", "c.5", "c.27", "c.28", "c.30", "c.31",
                  "b.66", "b.67", "b.68", "b.69", "b.70"}
KS = (1, 5, 10)


def scop_set(ctx: Context) -> pd.DataFrame:
    recs = read_fasta_dict(ctx.data("homology", "scop40.fasta"))
    rows = []
    for rid, seq in recs.items():
        dom, sccs = rid.split("/", 1)
        parts = sccs.split(".")
        fold = ".".join(parts[:2])
        if parts[0] in CLASSES and fold not in EXCLUDED_FOLDS and len(seq) <= ctx.sizes["max_len"]:
            rows.append((dom, seq, fold, ".".join(parts[:3]), sccs))
    df = drop_training(ctx, "scop40", pd.DataFrame(rows, columns=["id", "sequence", "fold", "superfamily", "family"]))
    keep = sample_at_most(range(len(df)), ctx.sizes["scop_domains"], ctx.rng(TASK))
    df = df.iloc[keep].reset_index(drop=True)
    ctx.write_split(TASK, df[["id", "family"]])
    return df


def hit_at_k(sim: np.ndarray, positive: np.ndarray, ignore: np.ndarray, ks=KS) -> tuple[dict[int, float], int]:
    """Hit@k over queries with >= 1 positive; ``ignore[i, j]`` removes j from query i's ranking."""
    sim = np.where(ignore, -np.inf, sim.astype(np.float64))
    np.fill_diagonal(sim, -np.inf)
    has_pos = (positive & ~ignore).any(1)
    order = np.argsort(-sim, axis=1, kind="stable")[:, : max(ks)]
    hits = np.take_along_axis(positive & ~ignore, order, axis=1)
    rates = {k: float(hits[has_pos, :k].any(1).mean()) if has_pos.any() else float("nan") for k in ks}
    return rates, int(has_pos.sum())


def labelled_hit_at_k(x: np.ndarray, labels, exclude=None, ks=KS) -> tuple[dict[int, float], int]:
    """Hit@k of cosine retrieval on any labelled set: positives share ``labels`` but not ``exclude``.

    ``exclude`` is a finer level whose members are left out of a query's ranking (SCOP superfamily
    level: labels = superfamily, exclude = family; a held-out CATH set: labels = C.A.T.H, no
    exclude; its topology level: labels = C.A.T, exclude = C.A.T.H). The query itself is never
    ranked. Returns ({k: Hit@k}, number of queries with >= 1 positive; the rest are skipped).
    """
    labels = np.asarray(labels)
    if exclude is None:
        ignore = np.eye(len(labels), dtype=bool)
    else:
        exclude = np.asarray(exclude)
        ignore = (exclude[:, None] == exclude[None]) | np.eye(len(labels), dtype=bool)
    positive = (labels[:, None] == labels[None]) & ~ignore
    return hit_at_k(cosine_matrix(x), positive, ignore, ks)


def run(ctx: Context, model: BenchModel) -> list[Row]:
    df = scop_set(ctx)
    x = model.pooled(df["sequence"].tolist())
    rows = []
    for level, labels, exclude in (("sf", "superfamily", "family"), ("fold", "fold", "superfamily")):
        hits, n = labelled_hit_at_k(x, df[labels], df[exclude])
        rows += [Row(TASK, f"{level}_hit{k}", v, n, f"{len(df)} class-a domains") for k, v in hits.items()]
    return rows
