"""One call from sequences to a report: embed -> cluster -> project -> evaluate -> figures -> HTML.

:func:`run` is what ``protlens run`` calls and :func:`demo` what ``protlens demo`` calls. With
labels, every clustering is scored against them next to a chance row and the same clusterings
of sequence baselines (k-mer profiles, Smith-Waterman similarity, MMseqs2), so a reader sees at
once whether the model beats what a bioinformatician would have done without it.
"""

from __future__ import annotations

import html
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from . import _keys as K
from .errors import InputError
from .io import read_input, write_h5ad

METHODS = ("kmeans", "spectral", "leiden", "agglomerative", "hdbscan")
PROJECTIONS = ("tsne", "umap", "pca")
#: Sequence baselines: k-mer profiles (any ``kmer...`` model name), all-vs-all Smith-Waterman
#: similarity, and MMseqs2's own clustering.
BASELINES = ("kmer", "kmer123", "alignment", "mmseqs")
#: The alignment baseline is O(n^2) alignments; above this it is skipped with a warning.
MAX_ALIGN = 3000
#: obsp key of the alignment similarity in the baseline's AnnData.
ALIGNMENT = "alignment"
PIPELINE = "pipeline"
TITLES = {"kmeans": "k-means", "spectral": "spectral", "leiden": "Leiden", "agglomerative": "agglomerative",
          "hdbscan": "HDBSCAN"}


def _load(input, labels, id_col, strip_gaps: bool) -> ad.AnnData:
    if not isinstance(input, ad.AnnData):
        return read_input(input, labels=labels, id_col=id_col, strip_gaps=strip_gaps)
    adata = input.copy()
    if labels is not None:
        from .io import join_labels

        missing = join_labels(adata, labels, id_col=id_col)
        adata.uns["labels_missing"] = {k: len(v) for k, v in missing.items()}
    return adata


def _resolve_label_col(adata: ad.AnnData, labels, label_col: str | None) -> str | None:
    if label_col is not None:
        if label_col not in adata.obs:
            cols = [c for c in adata.obs.columns if c not in (K.SEQUENCE, K.LENGTH)]
            raise InputError(f"no label column '{label_col}' (label columns: {', '.join(cols) or 'none'})")
        return label_col
    if labels is None:
        return None
    candidates = [c for c in adata.obs.columns if c not in (K.SEQUENCE, K.LENGTH)]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(f"{labels}: several label columns ({', '.join(candidates)}); choose one with --label-col")


def _check_labels(adata: ad.AnnData, label_col: str) -> np.ndarray:
    """The mask of labelled records; unlabelled ones and one-member classes are warned about by tl.evaluate."""
    values = adata.obs[label_col]
    labelled = values.notna().to_numpy()
    if not labelled.any():
        raise InputError(f"label column '{label_col}': no sequence has a label (do the ids match?)")
    if values[labelled].nunique() < 2:
        warnings.warn(f"label column '{label_col}' has a single class; ARI/NMI against it are not informative",
                      stacklevel=3)
    return labelled


def _resolve_k(n_clusters: int | str | None, n: int, n_classes: int | None) -> int | None:
    if n_clusters is None or n_clusters == "auto":
        return None
    if n_clusters == "labels":
        if n_classes is None:
            raise InputError("n_clusters='labels' needs labels (give --labels/--label-col or a number)")
        n_clusters = n_classes
    try:
        k = int(n_clusters)
    except (TypeError, ValueError):
        raise InputError(f"n_clusters must be a number, 'auto' or 'labels', got '{n_clusters}'") from None
    if not 2 <= k < n:
        raise InputError(f"n_clusters = {k} is not possible with {n} sequences (need 2 <= k <= {n - 1})")
    return k


def _check_embedding(adata: ad.AnnData) -> None:
    """NaN/inf rows, and all-zero rows (no cosine direction: e.g. a k-mer profile of 'NA'), named."""
    X = np.asarray(adata.X)
    for bad, what in ((~np.isfinite(X).all(axis=1), "contain NaN or infinite values"),
                      (~X.any(axis=1), "are all zero (sequences too short or without standard residues?)")):
        rows = np.flatnonzero(bad)
        if len(rows):
            ids = ", ".join(adata.obs_names[rows[:5]]) + (" ..." if len(rows) > 5 else "")
            raise InputError(f"{len(rows)} embedding(s) {what}: {ids}")


def _cluster_all(adata: ad.AnnData, methods: Sequence[str], k: int | None, n_neighbors: int, random_state: int,
                 similarity: str | None = None) -> list[str]:
    """Cluster with every method (one obs column each, named after the method); return the keys.

    With ``similarity`` (an obsp key of a dense similarity such as alignment scores) the graph
    methods run on its kNN graph and agglomerative on ``1 - similarity``; k-means, which needs
    vectors, is left out.
    """
    from . import tl

    tl.neighbors(adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), random_state=random_state,
                 use_graph=similarity)
    keys = []
    for method in methods:
        if similarity is not None and method == "kmeans":
            continue
        graph = None
        if similarity is not None:
            graph = K.CONNECTIVITIES if method in ("spectral", "leiden") else similarity
        # HDBSCAN picks its own number of clusters
        tl.cluster(adata, method, n_clusters=None if method == "hdbscan" else k, random_state=random_state,
                   use_graph=graph)
        keys.append(K.cluster_key(method))
    return keys


def _score(adata: ad.AnnData, label_col: str | None, keys: list[str], embedder: str, kind: str, n_boot: int,
           random_state: int) -> pd.DataFrame:
    """tl.evaluate (labelled records only), tagged with the embedder and the row kind."""
    from . import tl

    if not keys:
        return pd.DataFrame()
    table = tl.evaluate(adata, label_col, cluster_keys=keys, n_boot=n_boot, random_state=random_state)
    table = table.rename_axis("method").reset_index()
    is_chance = table["method"] == "chance"
    table.insert(0, "embedder", np.where(is_chance, "labels permuted", embedder))
    table.insert(0, "kind", np.where(is_chance, "chance", kind))
    return table


def _baseline_scores(adata: ad.AnnData, baselines: Sequence[str], model_name: str, label_col: str,
                     methods: Sequence[str], k: int | None, n_neighbors: int, n_boot: int,
                     random_state: int) -> list[pd.DataFrame]:
    """Cluster sequence baselines the same way and score them; their labels go to ``obs['<method>_<baseline>']``."""
    from . import pp
    from .models import load_model

    rows = []
    for name in baselines:
        if (load_model(name).name if name.startswith("kmer") else name) == model_name:
            continue  # the model is this baseline already
        sub = ad.AnnData(obs=adata.obs[[K.SEQUENCE, label_col]].copy())
        if name.startswith("kmer"):
            pp.embed(sub, model=name, progress=False)
            keys = _cluster_all(sub, methods, k, n_neighbors, random_state)
        elif name == "alignment":
            if adata.n_obs > MAX_ALIGN:
                warnings.warn(f"alignment baseline skipped: {adata.n_obs} sequences > {MAX_ALIGN} "
                              "(all-vs-all Smith-Waterman is quadratic)", stacklevel=3)
                continue
            from .baselines import alignment

            alignment(sub, key_added=ALIGNMENT)
            keys = _cluster_all(sub, methods, k, n_neighbors, random_state, similarity=ALIGNMENT)
        elif name == "mmseqs":
            if shutil.which("mmseqs") is None:
                warnings.warn("mmseqs baseline skipped: the 'mmseqs' program is not installed "
                              "(Debian/Ubuntu: apt-get install mmseqs2)", stacklevel=3)
                continue
            from .baselines import mmseqs

            mmseqs(sub, key_added="mmseqs")
            keys = ["mmseqs"]
        else:
            raise InputError(f"unknown baseline '{name}' (choose from {', '.join(BASELINES)})")
        for key in keys:
            adata.obs[key if key == "mmseqs" else f"{key}_{name}"] = sub.obs[key].to_numpy()
        table = _score(sub, label_col, keys, name, "baseline", n_boot, random_state)
        rows.append(table[table["kind"] != "chance"])
    return rows


def _figures(adata: ad.AnnData, out: Path, label_col: str | None, keys: list[str], basis: str,
             formats: Sequence[str]) -> tuple[list[tuple[str, Path, list[Path]]], str]:
    """Panels, contingency heatmaps and the interactive scatter; returns (report figures, plotly fragment)."""
    from . import pl

    formats = list(dict.fromkeys(["png", *formats]))  # the report inlines the PNG

    def save(fig, name: str, caption: str) -> tuple[str, Path, list[Path]]:
        png, *others = pl.save_figure(fig, out / "figures" / name, formats=formats)
        return caption, png, others

    panel_keys = ([label_col] if label_col else []) + keys
    titles = (["ground truth"] if label_col else []) + [TITLES.get(k, k) for k in keys]
    figures = [save(pl.embedding_panels(adata, panel_keys, basis=basis, reference=label_col, titles=titles),
                    "panels", "Same 2-D coordinates, coloured by " + ("the labels and by " if label_col else "")
                    + "each clustering")]
    if label_col:
        figures += [save(pl.contingency(adata, label_col, key), f"contingency_{key}",
                         f"{label_col} vs {key}: fraction of each class in each cluster") for key in keys]
    hover = [c for c in adata.obs.columns if c != K.SEQUENCE and adata.obs[c].nunique() < adata.n_obs]
    scatter = pl.interactive_scatter(adata, panel_keys, basis=basis, reference=label_col,
                                     hover=list(dict.fromkeys(panel_keys + hover)))
    pl.write_interactive(scatter, out / "scatter.html")
    return figures, pl.interactive_fragment(scatter)


def run(input: str | Path | ad.AnnData, labels: str | Path | None = None, label_col: str | None = None,
        id_col: str | None = None, model: str | None = None, methods: Sequence[str] = ("kmeans", "spectral", "leiden"),
        n_clusters: int | str | None = None, out: str | Path = "protlens_out", projection: str = "tsne",
        random_state: int = 0, baselines: Sequence[str] = ("kmer", "alignment", "mmseqs"), n_neighbors: int = 15,
        n_boot: int = 200, strip_gaps: bool = False, formats: Sequence[str] = ("png", "svg"),
        progress: bool = True, title: str | None = None) -> ad.AnnData:
    """Embed, cluster, project, evaluate and report; writes ``out/result.h5ad``, ``metrics.csv``,
    ``figures/``, ``scatter.html`` and ``report.html`` and returns the AnnData.

    ``input`` is a FASTA/CSV/TSV path or an AnnData (already embedded if ``model`` is None and
    ``X`` is filled). ``n_clusters``: a number, ``None``/``"auto"`` (each method chooses and records
    its choice) or ``"labels"`` (the number of labelled classes). Without labels the scores are the
    intrinsic ones and no baselines are run.
    """
    from . import __version__, pp, tl
    from .models import default_model_name
    from .report import compact_metrics, write_report

    t0 = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown clustering method(s) {', '.join(unknown) or '(none given)'} "
                         f"(choose from {', '.join(METHODS)})")
    if projection not in PROJECTIONS:
        raise InputError(f"unknown projection '{projection}' (choose from {', '.join(PROJECTIONS)})")
    bad = [b for b in baselines if b not in BASELINES and not b.startswith("kmer")]
    if bad:
        raise InputError(f"unknown baseline(s) {', '.join(bad)} (choose from {', '.join(BASELINES)})")
    adata = _load(input, labels, id_col, strip_gaps)
    if adata.n_obs < 3:
        raise InputError(f"{adata.n_obs} sequence(s): clustering needs at least 3")
    label_col = _resolve_label_col(adata, labels, label_col)
    labelled = _check_labels(adata, label_col) if label_col else None
    n_classes = adata.obs.loc[labelled, label_col].nunique() if label_col else None
    k = _resolve_k(n_clusters, adata.n_obs, n_classes)

    if model is None and adata.n_vars > 0:
        model_name = adata.uns.get(K.EMBED, {}).get("model", "precomputed")
    else:
        model = model or default_model_name()
        pp.embed(adata, model=model, progress=progress)
        model_name = adata.uns[K.EMBED]["model"]
    _check_embedding(adata)

    keys = _cluster_all(adata, methods, k, n_neighbors, random_state)
    tl.project(adata, method=projection, random_state=random_state)
    if label_col:
        tables = [_score(adata, label_col, keys, model_name, "model", n_boot, random_state)]
        tables += _baseline_scores(adata, baselines, model_name, label_col, methods, k, n_neighbors,
                                   n_boot, random_state)
        metrics = pd.concat(tables, ignore_index=True)
        chance = metrics["kind"] == "chance"
        metrics = pd.concat([metrics[~chance], metrics[chance]], ignore_index=True)
    else:
        metrics = _score(adata, None, keys, model_name, "model", n_boot, random_state)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    basis = {"tsne": K.X_TSNE, "umap": K.X_UMAP, "pca": K.X_PCA}[projection]
    figures, fragment = _figures(adata, out, label_col, keys, basis, formats)
    adata.uns[PIPELINE] = {
        "params": dict(input=str(input) if not isinstance(input, ad.AnnData) else "AnnData", labels=labels,
                       label_col=label_col, id_col=id_col, model=model_name, methods=methods,
                       n_clusters="auto" if k is None else k, projection=projection, random_state=random_state,
                       baselines=list(baselines) if label_col else [], n_neighbors=n_neighbors, n_boot=n_boot),
        "seconds": round(time.perf_counter() - t0, 2), "protlens_version": __version__,
    }
    metrics.to_csv(out / "metrics.csv", index=False)
    summary = (f"Model <b>{html.escape(model_name)}</b>; clustering with {', '.join(methods)} "
               f"({'k chosen automatically' if k is None else f'k = {k}'})"
               + (f"; scored against <b>{html.escape(label_col)}</b> ({n_classes} classes)." if label_col else
                  "; no labels, so only intrinsic scores."))
    write_report(adata, out / "report.html", metrics=compact_metrics(metrics), figures=figures,
                 interactive=fragment, title=title or f"protlens: {adata.n_obs} sequences", summary=summary)
    write_h5ad(adata, out / "result.h5ad")
    return adata


def demo(out: str | Path = "protlens_demo", model: str | None = None, random_state: int = 0,
         progress: bool = True, **run_kwargs) -> ad.AnnData:
    """:func:`run` on the built-in synthetic families (offline, about a minute on 2 CPU cores).

    Writes the sequences and labels beside the results (``demo_sequences.fasta``,
    ``demo_labels.csv``) so the same analysis can be rerun with ``protlens run``.
    """
    from .datasets import synthetic_families
    from .models import default_model_name

    adata = synthetic_families(random_state=random_state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "demo_sequences.fasta", "w") as fh:
        fh.writelines(f">{i}\n{s}\n" for i, s in zip(adata.obs_names, adata.obs[K.SEQUENCE]))
    label_cols = [c for c in ("superfamily", "family", "subfamily") if c in adata.obs]
    adata.obs[label_cols].rename_axis("id").to_csv(out / "demo_labels.csv")
    return run(adata, label_col="family", model=model or default_model_name(), out=out, random_state=random_state,
               progress=progress, title="protlens demo: synthetic protein families", **run_kwargs)
