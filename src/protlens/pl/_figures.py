"""Static figures (matplotlib, no pyplot state): embedding panels and the contingency heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .. import _keys as K
from ..errors import InputError
from ._styles import (MISSING_NAMES, MISSING_STYLE, aligned_styles, categories, category_styles, match_clusters,
                      point_styles)

FORMATS = ("png", "svg")
BASIS_NAMES = {K.X_TSNE: "t-SNE", K.X_UMAP: "UMAP", K.X_PCA: "PCA"}


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 150) -> list[Path]:
    """Write ``stem.<fmt>`` for each format (legends outside the axes are kept in the bounding box)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def _coords(adata, basis: str) -> np.ndarray:
    if basis not in adata.obsm:
        raise InputError(f"no 2-D coordinates obsm['{basis}']; run protlens.tl.project first")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    if xy.shape[1] < 2:
        raise InputError(f"obsm['{basis}'] has fewer than 2 columns")
    return xy


def _obs(adata, key: str) -> pd.Series:
    if key not in adata.obs:
        raise InputError(f"no obs column '{key}' (columns: {', '.join(map(str, adata.obs.columns))})")
    return adata.obs[key]


def _scatter(ax, xy: np.ndarray, values: pd.Series, styles: dict[str, tuple[str, str]], size: float) -> None:
    colours, markers = point_styles(values.to_numpy(), styles)
    for marker in dict.fromkeys(markers):
        sel = markers == marker
        grey = marker == MISSING_STYLE[1]
        ax.scatter(xy[sel, 0], xy[sel, 1], c=list(colours[sel]), marker=marker, s=size * (0.6 if grey else 1.0),
                   linewidths=0.3, edgecolors="white", zorder=1 if grey else 2, rasterized=len(xy) > 5000)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _legend_handles(styles: dict[str, tuple[str, str]], counts: pd.Series) -> list[Line2D]:
    return [Line2D([], [], color=c, marker=m, linestyle="", markersize=6, markeredgecolor="white",
                   markeredgewidth=0.3, label=f"{name} ({int(counts.get(name, 0))})")
            for name, (c, m) in styles.items()]


def embedding_panels(adata, keys: Sequence[str], basis: str = K.X_TSNE, reference: str | None = None,
                     titles: Sequence[str] | None = None, point_size: float | None = None,
                     panel_inches: float = 4.6) -> Figure:
    """Side-by-side scatter panels of the same 2-D coordinates, one panel per obs column.

    ``reference`` (the ground-truth column, usually ``keys[0]``) fixes one colour + marker per
    class, shown in a legend outside the panels; each clustering panel colours a cluster like
    the class it matches best, so agreement reads as matching colours.
    """
    if not keys:
        raise InputError("embedding_panels needs at least one obs column to colour by")
    xy = _coords(adata, basis)
    ref_values = _obs(adata, reference).to_numpy() if reference is not None else None
    n = adata.n_obs
    size = point_size or float(np.clip(6000 / max(n, 1), 4, 40))
    legend_rows = 0
    panels = []
    for key in keys:
        values = _obs(adata, key)
        if key == reference:
            styles = category_styles(values.to_numpy())
        else:
            styles = aligned_styles(ref_values, values.to_numpy())
        panels.append((key, values, styles))
        legend_rows = max(legend_rows, len(styles))
    fig = Figure(figsize=(panel_inches * len(keys), panel_inches + 0.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for i, (ax, (key, values, styles)) in enumerate(zip(axes, panels)):
        _scatter(ax, xy, values, styles, size)
        n_groups = len(styles)
        title = titles[i] if titles is not None else key
        ax.set_title(f"{title}\n{n_groups} {'classes' if key == reference else 'clusters'}", fontsize=10)
    legend_key = reference if reference is not None else keys[0]
    _, values, styles = next(p for p in panels if p[0] == legend_key)
    ncol = max(1, math.ceil(len(styles) / 28))
    fig.legend(handles=_legend_handles(styles, values.astype(str).value_counts()), loc="outside right center",
               ncol=ncol, fontsize=7, frameon=False, title=legend_key, title_fontsize=8, handletextpad=0.2,
               columnspacing=0.8, borderaxespad=0.2)
    if reference is not None and len(keys) > 1:
        fig.suptitle(f"{BASIS_NAMES.get(basis, basis)} coordinates; clusters coloured like the {reference} they match "
                     "best (unmatched clusters: extra colours)", fontsize=9)
    return fig


def contingency_table(labels: Sequence, clusters: Sequence) -> pd.DataFrame:
    """Counts of records per (class, cluster), columns ordered so matched clusters form the diagonal."""
    ref = pd.Series(labels, dtype="object").astype(str)
    clu = pd.Series(clusters, dtype="object").astype(str)
    keep = ~ref.isin(MISSING_NAMES)
    table = pd.crosstab(ref[keep].to_numpy(), clu[keep].to_numpy())
    table = table.loc[categories(table.index)]
    table.index.name, table.columns.name = "class", "cluster"
    matched = {cls: c for c, cls in match_clusters(ref[keep], clu[keep]).items()}
    first = [matched[r] for r in table.index if r in matched]
    rest = sorted((c for c in table.columns if c not in first), key=lambda c: -table[c].max())
    return table[first + rest]


def contingency(adata, label_key: str, cluster_key: str, normalize: bool = True) -> Figure:
    """Heatmap of classes (rows) x clusters (columns); a perfect clustering is a diagonal.

    Cells show the fraction of each class in each cluster (``normalize``) or raw counts; rows
    and columns are named, so a split class or a merged cluster is visible at a glance.
    """
    table = contingency_table(_obs(adata, label_key).to_numpy(), _obs(adata, cluster_key).to_numpy())
    if table.empty:
        raise InputError(f"obs['{label_key}'] has no labelled records to compare with '{cluster_key}'")
    values = table.to_numpy(dtype=float)
    shown = values / values.sum(1, keepdims=True) if normalize else values
    n_rows, n_cols = table.shape
    fig = Figure(figsize=(min(3 + 0.22 * n_cols, 24), min(2 + 0.2 * n_rows, 24)), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="white")  # empty cells blank, so the pattern stands out
    im = ax.imshow(np.ma.masked_equal(shown, 0), cmap=cmap, aspect="auto", vmin=0, vmax=1 if normalize else None,
                   interpolation="nearest")
    fontsize = 8 if max(n_rows, n_cols) <= 20 else 6
    ax.set_xticks(range(n_cols), table.columns, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n_rows), table.index, fontsize=fontsize)
    ax.set_xlabel(f"cluster ({cluster_key})")
    ax.set_ylabel(label_key)
    if n_rows * n_cols <= 400:
        for (r, c), count in np.ndenumerate(values):
            if count:
                ax.text(c, r, int(count), ha="center", va="center", fontsize=fontsize,
                        color="black" if shown[r, c] > 0.6 * shown.max() else "white")
    fig.colorbar(im, ax=ax, shrink=0.6, label=f"fraction of the {label_key}" if normalize else "records")
    ax.set_title(f"{label_key} vs {cluster_key} ({int(values.sum())} records)", fontsize=10)
    return fig
