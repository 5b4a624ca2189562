"""One colour + marker per class, and cluster colours matched to the classes they recover.

Forty kinase families cannot be told apart by colour alone, so every class gets a colour from a
256-colour Glasbey palette for white backgrounds (maximally distinct neighbours, colorcet
``glasbey_dark``) *and* one of several marker shapes. Cluster ids are arbitrary integers; colouring them by their best-matching class (Hungarian
matching on the contingency table) makes "same colour in both panels" mean "same group".
"""

from __future__ import annotations

from collections.abc import Sequence

import colorcet as cc
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

#: Glasbey colours chosen for contrast on a white background (no pale yellows or pinks).
PALETTE: list[str] = list(cc.palette["glasbey_dark"])
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p")
MISSING_STYLE = ("#b0b0b0", ".")  # unlabelled records and noise (HDBSCAN -1)
MISSING_NAMES = frozenset({"nan", "-1", "None", ""})


def style(i: int) -> tuple[str, str]:
    """Style of the i-th category: consecutive categories differ in colour and in marker."""
    return PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]


def categories(values: Sequence) -> list[str]:
    """Sorted distinct category names (as strings), missing values excluded."""
    s = pd.Series(values, dtype="object")
    names = s[s.notna()].astype(str)
    return sorted(set(names) - MISSING_NAMES, key=_natural)


def _natural(name: str) -> tuple:
    """Sort cluster ids numerically ('2' before '10') and labels alphabetically."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def category_styles(values: Sequence) -> dict[str, tuple[str, str]]:
    """``{category: (colour, marker)}`` for the ground-truth panel."""
    return {c: style(i) for i, c in enumerate(categories(values))}


def match_clusters(reference: Sequence, clusters: Sequence) -> dict[str, str]:
    """Map each cluster to the class it overlaps most under a one-to-one assignment.

    Unmatched clusters (more clusters than classes) are left out of the mapping.
    """
    ref = pd.Series(reference, dtype="object").astype(str)
    clu = pd.Series(clusters, dtype="object").astype(str)
    keep = ~ref.isin(MISSING_NAMES) & ~clu.isin(MISSING_NAMES)
    if not keep.any():
        return {}
    table = pd.crosstab(clu[keep], ref[keep])
    rows, cols = linear_sum_assignment(-table.to_numpy())
    return {table.index[r]: table.columns[c] for r, c in zip(rows, cols) if table.iat[r, c] > 0}


def aligned_styles(reference: Sequence | None, clusters: Sequence) -> dict[str, tuple[str, str]]:
    """Cluster styles: a matched cluster takes its class's style, the others take unused styles."""
    names = categories(clusters)
    if reference is None:
        return {c: style(i) for i, c in enumerate(names)}
    ref_styles = category_styles(reference)
    matched = match_clusters(reference, clusters)
    out = {c: ref_styles[matched[c]] for c in names if c in matched}
    free = (style(i) for i in range(len(ref_styles), len(ref_styles) + len(names)))
    for c in names:
        if c not in out:
            out[c] = next(free)
    return out


def point_styles(values: Sequence, styles: dict[str, tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-point colour and marker arrays (missing values get the grey style)."""
    s = pd.Series(values, dtype="object")
    names = np.where(s.isna(), "nan", s.astype(str))
    colours = np.array([styles.get(n, MISSING_STYLE)[0] for n in names], dtype=object)
    markers = np.array([styles.get(n, MISSING_STYLE)[1] for n in names], dtype=object)
    return colours, markers


def set_colors(adata, keys: Sequence[str], reference: str | None = None) -> None:
    """Make each obs column categorical and store ``uns['<key>_colors']`` as the report draws it.

    scanpy reads ``<key>_colors`` in the order of the column's categories, so
    ``sc.pl.embedding(adata, basis='tsne', color=key)`` shows the report's colours (clusters
    coloured like the class they match; unlabelled records and noise grey).
    """
    ref = adata.obs[reference].to_numpy() if reference is not None else None
    for key in keys:
        values = adata.obs[key]
        styles = category_styles(values.to_numpy()) if key == reference else aligned_styles(ref, values.to_numpy())
        names = categories(values)
        extra = sorted(set(values.dropna().astype(str)) - set(names))  # e.g. HDBSCAN "noise"
        text = values.astype("object").map(lambda v: v if pd.isna(v) else str(v))
        adata.obs[key] = pd.Categorical(text, categories=names + extra)
        adata.uns[f"{key}_colors"] = [styles.get(c, MISSING_STYLE)[0] for c in names + extra]
