"""Same-family similarity (ComproESM appendix C): do same-family pairs get higher cosine similarity?

``sim_pairs`` random pairs from the same CATH superfamily (C.A.T.H, the finest level we have; 1,010
as published) and as many from different superfamilies, drawn from the shared CATH pool; the AUROC
of cosine similarity separating them, the mean similarity of each kind, and a histogram figure.

Data: CATH S40 (``cath/``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ._common import BenchModel, Context, Row, cath_pool, safe_name

TASK = "similarity"


def sample_pairs(labels: np.ndarray, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to ``n`` distinct same-label pairs and as many different-label pairs (row indices i < j)."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    pos = rng.permutation(np.flatnonzero(same))[:n]
    neg = rng.permutation(np.flatnonzero(~same))[: len(pos)]
    idx = np.concatenate([pos, neg])
    return pd.DataFrame({"i": i[idx], "j": j[idx], "same": np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]})


def run(ctx: Context, model: BenchModel) -> list[Row]:
    pool = cath_pool(ctx)
    pairs = sample_pairs(pool["superfamily"].to_numpy(), ctx.sizes["sim_pairs"], ctx.rng(TASK))
    ctx.write_split(TASK, pd.DataFrame({"a": pool["id"].to_numpy()[pairs["i"]], "b": pool["id"].to_numpy()[pairs["j"]],
                                        "same_superfamily": pairs["same"]}))
    x = model.pooled(pool["sequence"].tolist())
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("nd,nd->n", x[pairs["i"]], x[pairs["j"]])
    same = pairs["same"].to_numpy().astype(bool)
    _histogram(cos, same, ctx.figure_path(f"{safe_name(model.name)}_similarity_hist.png"), model.name)
    n = int(same.sum())
    return [Row(TASK, "auroc", float(roc_auc_score(same, cos)), 2 * n, f"{n} same + {n} different-superfamily pairs"),
            Row(TASK, "mean_cos_same", float(cos[same].mean()), n),
            Row(TASK, "mean_cos_diff", float(cos[~same].mean()), n)]


def _histogram(cos: np.ndarray, same: np.ndarray, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(min(cos.min(), 0.0), 1.0, 41)
    ax.hist(cos[same], bins=bins, alpha=0.6, color="tab:blue", label="same superfamily")
    ax.hist(cos[~same], bins=bins, alpha=0.6, color="tab:red", label="different superfamily")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
