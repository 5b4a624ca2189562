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
from ._progress import Steps
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


def _load(input, labels, id_col, strip_gaps: bool, skip_invalid: bool = False) -> ad.AnnData:
    if not isinstance(input, ad.AnnData):
        try:
            return read_input(input, labels=labels, id_col=id_col, strip_gaps=strip_gaps, skip_invalid=skip_invalid)
        except InputError as e:
            if str(e).startswith("record '") or "duplicate id" in str(e):
                raise InputError(f"{e}; pass --skip-invalid to set such records aside in rejected.tsv and go on") \
                    from None
            raise
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


def at_classes_key(method: str, n_classes: int) -> str:
    """obs column of ``method`` run with k = the number of labelled classes (beside its automatic choice)."""
    return f"{method}_k{n_classes}"


def _cluster_all(adata: ad.AnnData, methods: Sequence[str], k: int | None, n_neighbors: int, random_state: int,
                 similarity: str | None = None, k_classes: int | None = None,
                 failed: dict[str, str] | None = None) -> list[str]:
    """Cluster with every method (one obs column each, named after the method); return the keys.

    With ``k=None`` each method chooses k (the rule and the evidence go to ``uns[method]``); with
    ``k_classes`` as well, each method also runs at k = ``k_classes`` (obs column
    :func:`at_classes_key`), so a table can compare both. With ``similarity`` (an obsp key of a
    dense similarity such as alignment scores) the graph methods run on its kNN graph and
    agglomerative on ``1 - similarity``; k-means, which needs vectors, is left out. A method that
    fails on the data (InputError, or a library's ValueError) is recorded in ``failed`` (method -> message) and the others go on.
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
        runs = [(K.cluster_key(method), None if method == "hdbscan" else k)]  # HDBSCAN picks its own k
        if k is None and k_classes is not None and method != "hdbscan" and 2 <= k_classes < adata.n_obs:
            runs.append((at_classes_key(method, k_classes), k_classes))
        for key, n_clusters in runs:
            try:
                tl.cluster(adata, method, n_clusters=n_clusters, random_state=random_state, use_graph=graph,
                           key_added=key)
            except (InputError, ValueError) as e:  # ValueError: a library refusing the data (e.g. HDBSCAN sizes)
                if failed is None:
                    raise
                failed[key] = str(e)
                warnings.warn(f"{method} failed and is left out: {e}", stacklevel=3)
                continue
            keys.append(key)
    return keys


def k_source(adata: ad.AnnData, key: str, n_classes: int | None) -> str:
    """How the number of clusters of clustering ``key`` was set, in words for the metrics table."""
    info = adata.uns.get(key, {})
    selection = str(info.get("selection", ""))
    given = info.get("params", {}).get("n_clusters")
    if key == "mmseqs":
        return "MMseqs2 (sequence identity threshold)"
    if given is None or given == "None":
        return f"automatic ({selection})" if selection else "automatic"
    if n_classes is not None and int(given) == n_classes and key.endswith(f"_k{n_classes}"):
        return "= number of classes"
    return "given"


def _score(adata: ad.AnnData, label_col: str | None, keys: list[str], embedder: str, kind: str, n_boot: int,
           random_state: int) -> pd.DataFrame:
    """tl.evaluate (labelled records only), tagged with the embedder and the row kind."""
    from . import tl

    if not keys:
        return pd.DataFrame()
    table = tl.evaluate(adata, label_col, cluster_keys=keys, n_boot=n_boot, random_state=random_state)
    table = table.rename_axis("method").reset_index()
    is_chance = table["method"] == "chance"
    n_classes = int(table.loc[is_chance, "n_clusters"].iloc[0]) if is_chance.any() else None
    table.insert(1, "k from", [("= number of classes (labels permuted)" if c else k_source(adata, m, n_classes))
                               for m, c in zip(table["method"], is_chance)])
    table.insert(0, "embedder", np.where(is_chance, "labels permuted", embedder))
    table.insert(0, "kind", np.where(is_chance, "chance", kind))
    return table


def _baseline_scores(adata: ad.AnnData, baselines: Sequence[str], model_name: str, label_col: str,
                     methods: Sequence[str], k: int | None, n_neighbors: int, n_boot: int, random_state: int,
                     k_classes: int | None, steps: Steps, skipped: dict[str, str], failed: dict[str, str],
                     columns: list[str]) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Cluster sequence baselines the same way and score them; their labels go to ``obs['<method>_<baseline>']``.

    Returns (score tables, k-sweep curves). Baselines that cannot run are named in ``skipped`` with the
    reason; the obs columns written are appended to ``columns``.
    """
    from . import pp
    from .models import load_model

    rows, curves = [], []
    for name in baselines:
        if (load_model(name).name if name.startswith("kmer") else name) == model_name:
            continue  # the model is this baseline already
        sub = ad.AnnData(obs=adata.obs[[K.SEQUENCE, label_col]].copy())
        if name.startswith("kmer"):
            with steps(f"baseline {name}", f"baseline {name}: embedding and clustering"):
                pp.embed(sub, model=name, progress=False)
                keys = _cluster_all(sub, methods, k, n_neighbors, random_state, k_classes=k_classes, failed=failed)
        elif name == "alignment":
            if adata.n_obs > MAX_ALIGN:
                skipped[name] = (f"{adata.n_obs} sequences > {MAX_ALIGN} (all-vs-all Smith-Waterman is quadratic)")
                warnings.warn(f"alignment baseline skipped: {skipped[name]}", stacklevel=3)
                continue
            from .baselines import alignment

            alignment(sub, key_added=ALIGNMENT, progress=steps.enabled)
            with steps("baseline alignment", "baseline alignment: clustering"):
                keys = _cluster_all(sub, methods, k, n_neighbors, random_state, similarity=ALIGNMENT,
                                    k_classes=k_classes, failed=failed)
        elif name == "mmseqs":
            if shutil.which("mmseqs") is None:
                skipped[name] = "the 'mmseqs' program is not installed (Debian/Ubuntu: apt-get install mmseqs2)"
                warnings.warn(f"mmseqs baseline skipped: {skipped[name]}", stacklevel=3)
                continue
            from .baselines import mmseqs

            with steps("baseline mmseqs", "baseline mmseqs: easy-cluster"):
                mmseqs(sub, key_added="mmseqs")
            keys = ["mmseqs"]
        else:
            raise InputError(f"unknown baseline '{name}' (choose from {', '.join(BASELINES)})")
        for key in keys:
            column = key if key == "mmseqs" else f"{key}_{name}"
            adata.obs[column] = sub.obs[key].to_numpy()
            columns.append(column)
        table = _score(sub, label_col, keys, name, "baseline", n_boot, random_state)
        rows.append(table[table["kind"] != "chance"])
        curves.append(sweep_curves(sub, keys, name, label_col))
    return rows, curves


def sweep_curves(adata: ad.AnnData, keys: Sequence[str], embedder: str, label_col: str | None) -> pd.DataFrame:
    """One row per candidate of every automatic-k clustering in ``keys``: k, stability and (with labels) ARI/NMI."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from .tl._cluster import sweep_key

    rows = []
    labelled = adata.obs[label_col].notna().to_numpy() if label_col else np.ones(adata.n_obs, bool)
    y = adata.obs[label_col].astype(str).to_numpy()[labelled] if label_col else None
    for key in keys:
        info = adata.uns.get(key, {})
        if "k_sweep" not in info or sweep_key(key) not in adata.obsm:
            continue
        table, labels = info["k_sweep"], np.asarray(adata.obsm[sweep_key(key)])
        for j in range(labels.shape[1]):
            row = {"embedder": embedder, "method": key, "k": int(table["k"].iat[j]),
                   "stability": float(table["stability"].iat[j]) if "stability" in table else np.nan,
                   "chosen": j == int(info.get("k_sweep_choice", -1))}
            if y is not None:
                c = labels[labelled, j]
                row.update(ARI=adjusted_rand_score(y, c), NMI=normalized_mutual_info_score(y, c))
            rows.append(row)
    return pd.DataFrame(rows)


def chance_band(adata: ad.AnnData, label_col: str, ks: Sequence[int], n_perm: int = 20,
                random_state: int = 0) -> pd.DataFrame:
    """ARI/NMI of random clusterings into k equal-probability groups against the labels (2.5-97.5% of ``n_perm``)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(random_state)
    y = adata.obs[label_col].dropna().astype(str).to_numpy()
    rows = []
    for k in sorted(set(int(k) for k in ks)):
        draws = [rng.integers(0, k, len(y)) for _ in range(n_perm)]
        ari = [adjusted_rand_score(y, c) for c in draws]
        nmi = [normalized_mutual_info_score(y, c) for c in draws]
        rows.append({"k": k, "ARI_lo": np.percentile(ari, 2.5), "ARI_hi": np.percentile(ari, 97.5),
                     "NMI_lo": np.percentile(nmi, 2.5), "NMI_hi": np.percentile(nmi, 97.5)})
    return pd.DataFrame(rows)


def far_from_classes(metrics: pd.DataFrame, n_classes: int, factor: float = 2.0) -> list[str]:
    """Automatic choices of k more than ``factor`` times away from the number of labelled classes, in words."""
    auto = metrics[metrics["k from"].astype(str).str.startswith("automatic")]
    out = []
    for _, r in auto.iterrows():
        k = int(r["n_clusters"])
        if k > factor * n_classes or k * factor < n_classes:
            rule = str(r["k from"]).removeprefix("automatic").strip(" ()") or "its automatic rule"
            out.append(f"{r['method']} on {r['embedder']} chose {k} clusters by {rule} for {n_classes} labelled classes")
    return out


def _title(adata: ad.AnnData, key: str, n_classes: int | None) -> str:
    """'k-means, k = number of classes' / 'spectral, automatic (silhouette)': what a panel or heatmap shows."""
    method = adata.uns.get(key, {}).get("params", {}).get("method", key)
    how = k_source(adata, key, n_classes).replace("= number of classes", f"k = {n_classes} (classes)")
    return f"{TITLES.get(method, method)}, {how}"


def _figures(adata: ad.AnnData, out: Path, label_col: str | None, keys: list[str], basis: str,
             formats: Sequence[str], curves: pd.DataFrame | None = None, band: pd.DataFrame | None = None,
             n_classes: int | None = None) -> tuple[list[tuple[str, Path, list[Path], bool]], str]:
    """Panels, contingency heatmaps, the k sweep and the interactive map.

    Returns the report's figures as (caption, png, other formats, shown full size in a scroll box)
    and the plotly fragment. With labels and both kinds of k, the panels show the clusterings at
    k = the number of classes (comparable with the ground truth, as in the paper's Figure 2); the
    automatic ones are in the interactive map's menu and the heatmaps.
    """
    from . import pl

    formats = list(dict.fromkeys(["png", *formats]))  # the report inlines the PNG

    def save(fig, name: str, caption: str, wide: bool = False) -> tuple[str, Path, list[Path], bool]:
        png, *others = pl.save_figure(fig, out / "figures" / name, formats=formats, dpi=100 if wide else 150)
        return caption, png, others, wide

    at_classes = [k for k in keys if n_classes and k.endswith(f"_k{n_classes}")]
    shown = at_classes or keys
    panel_keys = ([label_col] if label_col else []) + shown
    titles = (["ground truth"] if label_col else []) + [_title(adata, k, n_classes) for k in shown]
    figures = [save(pl.embedding_panels(adata, panel_keys, basis=basis, reference=label_col, titles=titles),
                    "panels", "Same 2-D coordinates, coloured by " + ("the labels and by " if label_col else "")
                    + "each clustering")]
    if curves is not None and len(curves):
        figures.append(save(pl.k_sweep(curves, band, n_classes), "k_sweep",
                            "Every k each method tried when choosing k automatically: agreement with the labels "
                            "(model: solid lines; baselines: dashed/dotted) against the chance band"
                            if label_col else "Half-sample stability at every k each method tried"))
    if label_col:
        figures += [save(pl.contingency(adata, label_col, key), f"contingency_{key}",
                         f"{label_col} vs {key} ({_title(adata, key, n_classes)}): fraction of each class in each cluster, "
                         "counts in the cells", wide=True) for key in keys]
    hover = [c for c in adata.obs.columns if c != K.SEQUENCE and adata.obs[c].nunique() < adata.n_obs]
    scatter = pl.interactive_scatter(adata, panel_keys + [k for k in keys if k not in shown], basis=basis,
                                     reference=label_col, hover=list(dict.fromkeys(panel_keys + hover)))
    return figures, pl.interactive_fragment(scatter)


def _set_aside(adata: ad.AnnData, bad: np.ndarray, reason: str) -> ad.AnnData:
    """Drop the records in mask ``bad`` and add them to ``uns['rejected']`` with ``reason``."""
    rejected = dict(adata.uns.get("rejected", {"id": [], "reason": []}))
    ids = list(adata.obs_names[bad])
    kept = adata[~bad].copy()
    kept.uns["rejected"] = {"id": list(rejected["id"]) + ids, "reason": list(rejected["reason"]) + [reason] * len(ids)}
    return kept


def _bad_embeddings(adata: ad.AnnData) -> list[tuple[np.ndarray, str]]:
    """(mask, problem) for NaN/inf rows and all-zero rows (no cosine direction: e.g. a k-mer profile of 'NA')."""
    X = np.asarray(adata.X)
    return [(~np.isfinite(X).all(axis=1), "embedding contains NaN or infinite values"),
            (~X.any(axis=1), "embedding is all zero (sequence too short or without standard residues?)")]


def run(input: str | Path | ad.AnnData, labels: str | Path | None = None, label_col: str | None = None,
        id_col: str | None = None, model: str | None = None, methods: Sequence[str] = ("kmeans", "spectral", "leiden"),
        n_clusters: int | str | None = None, out: str | Path = "protlens_out", projection: str = "tsne",
        random_state: int = 0, baselines: Sequence[str] = ("kmer", "alignment", "mmseqs"), n_neighbors: int = 15,
        n_boot: int = 200, strip_gaps: bool = False, formats: Sequence[str] = ("png", "svg"),
        progress: bool = True, title: str | None = None, skip_invalid: bool = False) -> ad.AnnData:
    """Embed, cluster, project, evaluate and report; writes ``out/result.h5ad``, ``metrics.csv``,
    ``figures/`` and ``report.html`` (with the interactive map inside) and returns the AnnData.

    ``input`` is a FASTA/CSV/TSV path or an AnnData (already embedded if ``model`` is None and
    ``X`` is filled). ``n_clusters``: a number, ``None``/``"auto"`` (each method chooses and records
    its choice; with labels each method also runs at k = the number of labelled classes, and both
    rows are scored) or ``"labels"`` (the number of labelled classes only). Without labels the
    scores are the intrinsic ones and no baselines are run. ``skip_invalid`` sets records that
    cannot be read or embedded aside into ``out/rejected.tsv`` instead of stopping.
    """
    from . import __version__, pp, tl
    from .models import default_model_name
    from .report import compact_metrics, write_report

    t0 = time.perf_counter()
    steps = Steps(progress)
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
    with steps("read", "reading sequences"):
        adata = _load(input, labels, id_col, strip_gaps, skip_invalid)
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
        with steps("embed"):
            pp.embed(adata, model=model, progress=progress)
        model_name = adata.uns[K.EMBED]["model"]
        source = Path(str(adata.uns[K.EMBED].get("source", "")))
        if source.parts and source.exists():  # so explain finds the model from any working directory
            adata.uns[K.EMBED]["source"] = str(source.resolve())
    for mask, problem in _bad_embeddings(adata):
        if not mask.any():
            continue
        if not skip_invalid:
            rows = np.flatnonzero(mask)
            ids = ", ".join(adata.obs_names[rows[:5]]) + (" ..." if len(rows) > 5 else "")
            raise InputError(f"{len(rows)} record(s) with unusable embeddings ({problem}): {ids}; "
                             "pass --skip-invalid to set them aside in rejected.tsv")
        adata = _set_aside(adata, mask, problem)
    _check_distinct(adata)

    failed: dict[str, str] = {}
    with steps("cluster", f"clustering ({', '.join(methods)})"):
        keys = _cluster_all(adata, methods, k, n_neighbors, random_state, k_classes=n_classes if k is None else None,
                            failed=failed)
    if not keys:
        raise InputError("every clustering method failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()))
    with steps("project", f"projecting ({projection})"):
        tl.project(adata, method=projection, random_state=random_state)
    skipped: dict[str, str] = {}
    baseline_columns: list[str] = []
    curves = [sweep_curves(adata, keys, model_name, label_col)]
    if label_col:
        with steps("evaluate", "scoring against the labels"):
            tables = [_score(adata, label_col, keys, model_name, "model", n_boot, random_state)]
        base_tables, base_curves = _baseline_scores(adata, baselines, model_name, label_col, methods, k, n_neighbors,
                                                    n_boot, random_state, n_classes if k is None else None, steps,
                                                    skipped, failed, baseline_columns)
        curves += base_curves
        metrics = pd.concat(tables + base_tables, ignore_index=True)
        chance = metrics["kind"] == "chance"
        metrics = pd.concat([metrics[~chance], metrics[chance]], ignore_index=True)
    else:
        with steps("evaluate", "intrinsic scores"):
            metrics = _score(adata, None, keys, model_name, "model", n_boot, random_state)
    curves = pd.concat([c for c in curves if len(c)], ignore_index=True) if any(len(c) for c in curves) else None
    band = chance_band(adata, label_col, curves["k"], random_state=random_state) \
        if curves is not None and label_col else None
    warnings_k = far_from_classes(metrics, n_classes) if label_col and k is None else []
    for w in warnings_k:
        warnings.warn(w, stacklevel=2)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rejected = pd.DataFrame(adata.uns.get("rejected", {"id": [], "reason": []}))
    if len(rejected):
        rejected.to_csv(out / "rejected.tsv", sep="\t", index=False)
    basis = {"tsne": K.X_TSNE, "umap": K.X_UMAP, "pca": K.X_PCA}[projection]
    with steps("figures", "drawing figures"):
        figures, fragment = _figures(adata, out, label_col, keys, basis, formats, curves, band, n_classes)
    used = [b for b in baselines if b not in skipped] if label_col else []
    adata.uns[PIPELINE] = {
        "params": dict(input=str(input) if not isinstance(input, ad.AnnData) else "AnnData", labels=labels,
                       label_col=label_col, id_col=id_col, model=model_name, methods=methods,
                       n_clusters="auto" if k is None else k, projection=projection, random_state=random_state,
                       baselines=used, n_neighbors=n_neighbors, n_boot=n_boot, skip_invalid=skip_invalid),
        "baselines_skipped": skipped, "failed": failed, "k_warnings": warnings_k,
        "n_rejected": len(rejected), "protlens_version": __version__,
    }
    if curves is not None:
        adata.uns[PIPELINE]["k_sweep"] = curves
    metrics.to_csv(out / "metrics.csv", index=False)
    summary = _summary(model_name, methods, k, label_col, n_classes, len(rejected))
    with steps("report", "writing the report"):
        adata.uns[PIPELINE]["seconds_by_step"] = dict(steps.seconds)
        adata.uns[PIPELINE]["seconds"] = round(time.perf_counter() - t0, 2)
        write_report(adata, out / "report.html", metrics=compact_metrics(metrics), figures=figures,
                     interactive=fragment, title=title or f"protlens: {adata.n_obs} sequences", summary=summary,
                     warnings_html=warnings_k, skipped=skipped, failed=failed)
        write_h5ad(adata, out / "result.h5ad")
    adata.uns[PIPELINE]["seconds_by_step"] = dict(steps.seconds)
    return adata


def _summary(model_name: str, methods: Sequence[str], k: int | None, label_col: str | None,
             n_classes: int | None, n_rejected: int) -> str:
    if k is not None:
        how = f"k = {k}"
    elif label_col:
        how = (f"each method at its automatically chosen k and at k = {n_classes}, the number of labelled classes "
               "(both rows are in the table)")
    else:
        how = "k chosen automatically by each method"
    text = (f"Model <b>{html.escape(model_name)}</b>; clustering with {', '.join(methods)} ({how})"
            + (f"; scored against <b>{html.escape(label_col)}</b> ({n_classes} classes)." if label_col else
               "; no labels, so only intrinsic scores."))
    if n_rejected:
        text += f" {n_rejected} record(s) were set aside (listed in <code>rejected.tsv</code>)."
    return text


def _check_distinct(adata: ad.AnnData) -> None:
    """Clustering identical points is meaningless: say so, and what to do instead."""
    X = np.asarray(adata.X)
    n_distinct = len(np.unique(np.round(X, 6), axis=0))
    if n_distinct < 2:
        raise InputError(f"all {adata.n_obs} sequences have the same embedding (identical sequences?); there is "
                         "nothing to cluster: remove duplicates (e.g. mmseqs easy-linclust --min-seq-id 1.0) or "
                         "add the sequences you want to compare")
    if n_distinct < 3:
        raise InputError(f"only {n_distinct} distinct embeddings among {adata.n_obs} sequences; clustering needs at "
                         "least 3 different sequences")


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
