"""Do two clusterings get the same explanation? Overlap of the top residues, protein by protein."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def top_residues(track: np.ndarray, fraction: float = 0.1) -> set[int]:
    """Indices of the ``fraction`` most important residues (at least one)."""
    n = max(1, int(round(fraction * len(track))))
    return set(np.argsort(-np.asarray(track), kind="stable")[:n].tolist())


def jaccard_top(tracks_a: Sequence[np.ndarray], tracks_b: Sequence[np.ndarray], fraction: float = 0.1) -> np.ndarray:
    """Per protein, Jaccard index of the top-``fraction`` residues of two explanations."""
    out = np.empty(len(tracks_a))
    for i, (a, b) in enumerate(zip(tracks_a, tracks_b)):
        sa, sb = top_residues(a, fraction), top_residues(b, fraction)
        out[i] = len(sa & sb) / len(sa | sb)
    return out


def random_jaccard(fraction: float = 0.1) -> float:
    """Expected Jaccard of two independent random top-``fraction`` sets (large L): f / (2 - f)."""
    return fraction / (2 - fraction)


def overlap_table(jaccard: np.ndarray, clusters: Sequence, other: Sequence | None = None) -> pd.DataFrame:
    """Per cluster of ``clusters``: size, mean/median Jaccard and, with ``other``, the share of members
    that the other clustering keeps together (its majority cluster among them)."""
    df = pd.DataFrame({"cluster": np.asarray(clusters).astype(str), "jaccard": jaccard})
    if other is not None:
        df["other"] = np.asarray(other).astype(str)
    rows = []
    for c, g in df.groupby("cluster", sort=True):
        row = {"cluster": c, "n": len(g), "jaccard_mean": g["jaccard"].mean(), "jaccard_median": g["jaccard"].median()}
        if other is not None:
            row["majority_share_other"] = g["other"].value_counts().iloc[0] / len(g)
        rows.append(row)
    return pd.DataFrame(rows)
