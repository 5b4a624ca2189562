"""Figures of explanations: position x dimension heatmaps, residue tracks, per-cluster consensus."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import _keys as K
from ..io import read_residues
from .compare import top_residues


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(attr_map: np.ndarray, title: str = "", max_dims: int | None = None):
    """Position x embedding-dimension map (|attribution|; brighter = more influential), as in the paper's Fig. 3.

    ``max_dims`` keeps the dimensions with the largest total attribution (all by default).
    """
    plt = _plt()
    a = np.abs(np.asarray(attr_map, float))
    dims = np.arange(a.shape[1])
    if max_dims is not None and a.shape[1] > max_dims:
        dims = np.sort(np.argsort(-a.sum(0))[:max_dims])
    fig, ax = plt.subplots(figsize=(min(16, max(6, a.shape[0] / 25)), min(8, max(3, len(dims) / 12))))
    im = ax.imshow(a[:, dims].T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("sequence position")
    ax.set_ylabel("embedding dimension" + (f" (top {len(dims)})" if len(dims) < a.shape[1] else ""))
    if len(dims) < a.shape[1]:
        ax.set_yticks(range(0, len(dims), max(1, len(dims) // 10)))
        ax.set_yticklabels(dims[:: max(1, len(dims) // 10)])
    fig.colorbar(im, ax=ax, label="|attribution|")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_track(track: np.ndarray, seq: str, title: str = "", top_fraction: float = 0.1,
               motif_mask: np.ndarray | None = None):
    """Per-residue importance with the sequence underneath; the top residues in red, motifs shaded."""
    plt = _plt()
    t = np.asarray(track, float)
    top = sorted(top_residues(t, top_fraction))
    fig, ax = plt.subplots(figsize=(min(30, max(8, len(t) * 0.08)), 2.8))
    colors = np.full(len(t), "#8c8c8c", dtype=object)
    colors[top] = "#d62728"
    ax.bar(np.arange(len(t)), t, width=1.0, color=list(colors))
    if motif_mask is not None:
        for i in np.flatnonzero(motif_mask):
            ax.axvspan(i - 0.5, i + 0.5, color="#1f77b4", alpha=0.15, lw=0)
    ax.set_xlim(-0.5, len(t) - 0.5)
    ax.set_xticks(np.arange(len(seq)))
    ax.set_xticklabels(list(seq), fontsize=max(3, min(7, 600 / max(len(seq), 1))), family="monospace")
    for lab, i in zip(ax.get_xticklabels(), range(len(seq))):
        if i in set(top):
            lab.set_color("#d62728")
    ax.tick_params(axis="x", length=0, pad=1)
    ax.set_ylabel("importance")
    note = f"red: top {top_fraction:.0%} residues" + ("; blue: motif residues" if motif_mask is not None else "")
    ax.set_title(f"{title}  ({note})" if title else note, fontsize=9)
    # fixed margins: tight_layout would measure every residue label (seconds per figure)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 0.2 / fig.get_figwidth(), bottom=0.12, top=0.88)
    return fig


def plot_consensus(consensus: Mapping[str, tuple[str, str, np.ndarray, np.ndarray | None]], top_fraction: float = 0.1,
                   max_clusters: int = 12):
    """One panel per cluster: mean member importance on the medoid's residues, top positions labelled.

    ``consensus[cluster] = (medoid id, medoid sequence, track, motif mask of the medoid or None)``.
    """
    plt = _plt()
    items = list(consensus.items())[:max_clusters]
    fig, axes = plt.subplots(len(items), 1, figsize=(12, 1.6 * len(items) + 0.6), squeeze=False)
    for ax, (cluster, (medoid, seq, track, mask)) in zip(axes[:, 0], items):
        t = np.asarray(track, float)
        ax.fill_between(np.arange(len(t)), t, color="#4c72b0", alpha=0.7, lw=0)
        for i in np.flatnonzero(mask) if mask is not None else ():
            ax.axvspan(i - 0.5, i + 0.5, color="#ff7f0e", alpha=0.25, lw=0)
        for i in sorted(top_residues(t, top_fraction))[:40]:
            ax.text(i, t[i], f"{seq[i]}{i + 1}", fontsize=5, ha="center", va="bottom", color="#d62728")
        ax.set_xlim(0, len(t) - 1)
        ax.set_ylabel(str(cluster), rotation=0, ha="right", va="center", fontsize=8)
        ax.set_title(f"cluster {cluster}: consensus on medoid {medoid} ({len(t)} residues)", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("medoid residue position")
    if len(consensus) > max_clusters:
        fig.suptitle(f"first {max_clusters} of {len(consensus)} clusters", fontsize=9)
    fig.tight_layout()
    return fig


def write_figures(adata, folder: str | Path, key: str = K.EXPLAIN, method: str | None = None,
                  sources: Sequence[str] = ("surrogate", "plm")) -> dict[str, str]:
    """Heatmaps, tracks and consensus PNGs for one explain run; returns ``{name: path}``.

    ``method`` defaults to integrated gradients when it was run (it satisfies completeness and was
    the most faithful on our benchmarks), else the first method.
    """
    from .api import _motif_masks

    plt = _plt()
    info = adata.uns[key]
    params = info["params"]
    methods = list(np.atleast_1d(params["methods"]))
    method = method or ("integrated_gradients" if "integrated_gradients" in methods else methods[0])
    tracks_file = info["tracks_file"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(adata.obs_names)
    seqs = dict(zip(ids, adata.obs[K.SEQUENCE].astype(str)))
    masks, _, _ = _motif_masks(adata, str(params["motifs"]))
    mask_of = dict(zip(ids, masks)) if masks is not None else {}
    out: dict[str, str] = {}
    plm_methods = list(np.atleast_1d(params.get("plm_methods", [])))
    for src in sources:
        if src == "plm" and not bool(info.get("end_to_end_ran", False)):
            continue
        m = method if src == "surrogate" else (method if method in plm_methods else (plm_methods or [None])[0])
        if m is None:
            continue
        hid = list(np.atleast_1d(info["heatmap_ids"]))
        maps = read_residues(tracks_file, hid, group=f"maps/{src}/{m}")
        trs = read_residues(tracks_file, hid, group=f"{src}/{m}")
        for rid, a, t in zip(hid, maps, trs):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rid)
            fig = plot_heatmap(a, f"{rid}: {src} {m} (cluster {adata.obs.loc[rid, params['clusters']]})",
                               max_dims=64)
            out[f"heatmap_{src}_{safe}"] = _save(fig, folder / f"heatmap_{src}_{m}_{safe}.png", plt)
            fig = plot_track(t, seqs[rid], f"{rid} ({src}, {m})", float(params["top_fraction"]), mask_of.get(rid))
            out[f"track_{src}_{safe}"] = _save(fig, folder / f"track_{src}_{m}_{safe}.png", plt)
        medoids = dict(info["medoids"])
        cons = read_residues(tracks_file, list(medoids), group=f"consensus/{src}/{m}")
        data = {c: (medoids[c], seqs[medoids[c]], t, mask_of.get(medoids[c])) for c, t in zip(medoids, cons)}
        fig = plot_consensus(data, float(params["top_fraction"]))
        out[f"consensus_{src}"] = _save(fig, folder / f"consensus_{src}_{m}.png", plt)
    return out


def _save(fig, path: Path, plt) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
