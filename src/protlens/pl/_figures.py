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
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from .. import _keys as K
from ..errors import InputError
from ._styles import (MISSING_NAMES, MISSING_STYLE, PALETTE, aligned_styles, categories, category_styles,
                      match_clusters, point_styles)

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
    return [Line2D([], [], color=c, marker=m, linestyle="", markersize=8, markeredgecolor="white",
                   markeredgewidth=0.3, label=f"{name} ({int(counts.get(name, 0))})")
            for name, (c, m) in styles.items()]


def embedding_panels(adata, keys: Sequence[str], basis: str = K.X_TSNE, reference: str | None = None,
                     titles: Sequence[str] | None = None, point_size: float | None = None,
                     panel_inches: float | None = None, max_columns: int | None = None) -> Figure:
    """Scatter panels of the same 2-D coordinates, one panel per obs column, with one legend.

    ``reference`` (the ground-truth column, usually ``keys[0]``) fixes one colour + marker per
    class; each clustering panel colours a cluster like the class it matches best, so agreement
    reads as matching colours. Panels stay readable at many classes: with more than 12 classes
    they are drawn two per row (``max_columns``), larger, and the legend goes below them in
    several columns with the class sizes.
    """
    if not keys:
        raise InputError("embedding_panels needs at least one obs column to colour by")
    xy = _coords(adata, basis)
    ref_values = _obs(adata, reference).to_numpy() if reference is not None else None
    n = adata.n_obs
    size = point_size or float(np.clip(8000 / max(n, 1), 8, 50))
    panels = []
    for key in keys:
        values = _obs(adata, key)
        if key == reference:
            styles = category_styles(values.to_numpy())
        else:
            styles = aligned_styles(ref_values, values.to_numpy())
        panels.append((key, values, styles))
    legend_key = reference if reference is not None else keys[0]
    _, legend_values, legend_styles = next(p for p in panels if p[0] == legend_key)
    many = len(legend_styles) > 12
    ncols = min(len(keys), max_columns or (2 if many else 4))
    nrows = math.ceil(len(keys) / ncols)
    inches = panel_inches or (6.0 if many else 4.6)
    legend_cols = max(1, min(6, math.ceil(len(legend_styles) / 10))) if many else 1
    legend_rows = math.ceil(len(legend_styles) / legend_cols) if many else 0
    height = nrows * (inches + 0.6) + 0.25 * legend_rows
    fig = Figure(figsize=(inches * ncols + (0 if many else 2.2), height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (key, values, styles) in enumerate(panels):
        ax = axes[i]
        _scatter(ax, xy, values, styles, size)
        title = titles[i] if titles is not None else key
        ax.set_title(f"{title}: {len(styles)} {'classes' if key == reference else 'clusters'}", fontsize=14)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = _legend_handles(legend_styles, legend_values.astype(str).value_counts())
    fig.legend(handles=handles, loc="outside lower center" if many else "outside right center", ncol=legend_cols,
               fontsize=11, frameon=False, title=f"{legend_key} (members)", title_fontsize=12, handletextpad=0.3,
               columnspacing=1.2, borderaxespad=0.2, markerscale=1.3)
    if reference is not None and len(keys) > 1:
        fig.suptitle(f"{BASIS_NAMES.get(basis, basis)} coordinates; clusters coloured like the {reference} they match "
                     "best (unmatched clusters: extra colours)", fontsize=13)
    return fig


def k_sweep(curves: pd.DataFrame, band: pd.DataFrame | None = None, n_classes: int | None = None) -> Figure:
    """Agreement with the labels (ARI, NMI) against the number of clusters, one line per embedder x method.

    ``curves`` is :func:`protlens.pipeline.sweep_curves`' table; each method's automatic choice is
    a large marker, ``band`` (k, ARI_lo/hi, NMI_lo/hi) the chance band of random partitions, and
    ``n_classes`` a vertical line. Without labels (no ARI column) the half-sample stability is drawn instead.
    """
    metrics = [m for m in ("ARI", "NMI") if m in curves] or ["stability"]
    fig = Figure(figsize=(6.5 * len(metrics), 5.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    groups = list(curves.groupby(["embedder", "method"], sort=False))
    embedders = list(dict.fromkeys(curves["embedder"]))
    methods = list(dict.fromkeys(curves["method"]))
    dashes = ["-", "--", ":", "-."]
    for ax, metric in zip(axes, metrics):
        if band is not None and f"{metric}_lo" in band:
            ax.fill_between(band["k"], band[f"{metric}_lo"], band[f"{metric}_hi"], color="0.85", zorder=0,
                            label="chance (random partitions, 95%)")
        for (emb, method), g in groups:
            g = g.sort_values("k")
            colour = PALETTE[methods.index(method) % len(PALETTE)]
            style = dashes[embedders.index(emb) % len(dashes)]
            ax.plot(g["k"], g[metric], style, color=colour, marker=".", lw=1.6, label=f"{method} ({emb})")
            chosen = g[g["chosen"].astype(bool)]
            ax.plot(chosen["k"], chosen[metric], "o", ms=11, mfc="none", mec=colour, mew=2)
        if n_classes:
            ax.axvline(n_classes, color="black", lw=1, ls=":", label=f"{n_classes} labelled classes")
        ax.set_xscale("log")
        # labels at 1, 2, 5 x 10^n only: log-scale minor labels at every integer overlapped
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("number of clusters k (log scale)", fontsize=12)
        ax.set_ylabel(metric if metric != "stability" else "stability (mean ARI, half-sample vs full)", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
    handles, names = axes[-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), fontsize=10, frameon=False)
    fig.suptitle("Agreement with the labels at every k tried; circles: each method's automatic choice"
                 if metrics[0] != "stability" else "Half-sample stability at every k tried; circles: automatic choice",
                 fontsize=13)
    return fig


def contingency_table(labels: Sequence, clusters: Sequence) -> pd.DataFrame:
    """Counts of records per (class, cluster), columns ordered so matched clusters form the diagonal."""
    ref = pd.Series(labels, dtype="object").astype(str)
    clu = pd.Series(clusters, dtype="object").astype(str)
    keep = ~ref.isin(MISSING_NAMES)
    table = pd.crosstab(ref[keep].to_numpy(), clu[keep].to_numpy())
    table = table.loc[categories(table.index)]
    table.index.name, table.columns.name = "class", "cluster"
    matched = {c: cls for c, cls in match_clusters(ref[keep], clu[keep]).items()}
    row_of = {r: i for i, r in enumerate(table.index)}

    def place(c: str) -> tuple:
        """Next to its matched class, else next to the class it holds most of (matched cluster first)."""
        if c in matched:
            return row_of[matched[c]], 0, 0
        return int(np.argmax(table[c].to_numpy())), 1, -int(table[c].max())

    return table[sorted(table.columns, key=place)]


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
    # Cells big enough for a count at any size: the report shows large heatmaps at full size in a scroll box.
    cell = 0.3
    fig = Figure(figsize=(3.5 + cell * n_cols, 2.5 + cell * n_rows), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="white")  # empty cells blank, so the pattern stands out
    im = ax.imshow(np.ma.masked_equal(shown, 0), cmap=cmap, aspect="auto", vmin=0, vmax=1 if normalize else None,
                   interpolation="nearest")
    ax.set_xticks(range(n_cols), table.columns, rotation=90, fontsize=10)
    ax.set_yticks(range(n_rows), table.index, fontsize=10)
    ax.set_xlabel(f"cluster ({cluster_key}), ordered to the diagonal", fontsize=11)
    ax.set_ylabel(label_key, fontsize=11)
    for (r, c), count in np.ndenumerate(values):
        if count:
            ax.text(c, r, int(count), ha="center", va="center", fontsize=8 if count < 100 else 6,
                    color="black" if shown[r, c] > 0.6 * shown.max() else "white")
    fig.colorbar(im, ax=ax, shrink=min(0.6, 6 / max(n_rows * cell, 1)) if n_rows > 20 else 0.6,
                 label=f"fraction of the {label_key} (cell text: records)" if normalize else "records")
    ax.set_title(f"{label_key} vs {cluster_key} ({int(values.sum())} records)", fontsize=12)
    return fig
