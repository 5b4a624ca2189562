"""``explain(adata, ...)``: the AnnData step that explains cluster assignments residue by residue.

It writes per-residue tracks (and position x dimension maps for a few proteins) to a sidecar HDF5
and a measured summary to ``adata.uns["explain"]``: the surrogate's held-out accuracy, deletion-curve
faithfulness per method, plausibility (motif enrichment or planted-motif AUROC) and, with
``compare_with``, the overlap of the explanations of two clusterings.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from ..errors import InputError
from ..io import read_residues, write_residues
from .attribution import (METHODS, PLMClusterScore, SurrogateScore, explain_plm, explain_surrogate,
                          plm_centres, resolve_methods)
from .compare import jaccard_top, overlap_table, random_jaccard
from .faithfulness import FRACTIONS, deletion_curves, plm_scorer, surrogate_scorer
from .motifs import enrichment, locate_kinase_motifs, motif_masks, motif_summary
from .surrogate import SurrogateCNN
from .synthetic import planted_motif_auroc

TRACKS_FILE = "explain_tracks.h5"
#: Held-out accuracy below which a surrogate's explanations are flagged as unreliable.
RELIABLE_ACCURACY = 0.9
MOTIF_SOURCES = ("auto", "kinase", "planted", "none")


def cluster_labels(adata, clusters: str) -> np.ndarray:
    """The clustering's labels as strings; one clear error for a missing column, gaps or a singleton."""
    if clusters not in adata.obs:
        have = [c for c in adata.obs.columns if c not in (K.SEQUENCE, K.LENGTH)]
        raise InputError(f"no clustering '{clusters}' in obs (columns: {', '.join(have) or 'none'}); "
                         f"run `protlens cluster --method {clusters}` first")
    col = adata.obs[clusters]
    if col.isna().any():
        rid = adata.obs_names[np.flatnonzero(col.isna().to_numpy())[0]]
        raise InputError(f"record '{rid}': no '{clusters}' cluster assigned")
    labels = col.astype(str).to_numpy()
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise InputError(f"clustering '{clusters}' has a single cluster; there is no assignment to explain")
    if counts.min() < 2:
        c = names[np.argmin(counts)]
        rid = adata.obs_names[np.flatnonzero(labels == c)[0]]
        raise InputError(f"cluster '{c}' of '{clusters}' has one member ('{rid}'): a surrogate cannot be trained "
                         "and tested on it; recluster with fewer clusters or drop that record")
    return labels


#: The model explain falls back to when a result was embedded without per-residue states (k-mers).
FALLBACK_MODEL = "protlens-small"


def _stored_model(adata, base_dir: str | Path | None):
    """The model recorded in ``uns['embed']``, found by its source path (absolute, or relative to the working
    directory or to ``base_dir``, the result's folder) or by its name; None if nothing was recorded."""
    from ..models import load_model

    info = adata.uns.get(K.EMBED, {})
    source, name = str(info.get("source", "")), info.get("model")
    if name is None:
        return None
    places = [Path(source)] + ([Path(base_dir) / source] if source and base_dir is not None else [])
    found = next((str(p) for p in places if source and p.exists()), None)
    try:
        return load_model(found or str(name))
    except InputError as e:
        raise InputError(f"the model this result was embedded with ('{name}', from '{source}') cannot be found "
                         f"from here ({e}); pass --model NAME_OR_PATH") from None


def resolve_model(adata, model=None, base_dir: str | Path | None = None):
    """The PLM with per-residue states to explain with: ``model`` if given, else the recorded one.

    When the recorded model has no per-residue states (k-mer profiles), the bundled
    :data:`FALLBACK_MODEL` is used and a one-line warning says so and how to choose another.
    """
    from ..models import available_bundled, load_model

    if model is not None:
        plm = load_model(model) if isinstance(model, (str, Path)) else model
        if not getattr(plm, "is_neural", False):
            raise InputError(f"--model {getattr(plm, 'name', model)} has no per-residue states to explain with; "
                             f"pass a protein language model (e.g. {FALLBACK_MODEL} or an ESM-2 name or folder)")
        return plm
    plm = _stored_model(adata, base_dir)
    if getattr(plm, "is_neural", False):  # ESM or UniRep
        return plm
    what = getattr(plm, "name", "no recorded model")
    if FALLBACK_MODEL not in available_bundled():
        raise InputError(f"the result was embedded with {what}, which has no per-residue states; pass --model with "
                         "a protein language model (an ESM-2 name or folder)")
    warnings.warn(f"the result was embedded with {what}, which has no per-residue states; explaining with "
                  f"--model {FALLBACK_MODEL} (pass --model to choose another)", stacklevel=3)
    return load_model(FALLBACK_MODEL)


def per_residue_embeddings(adata, per_residue_file: str | Path | None = None, layer: int | None = None,
                           model=None, progress: bool = False) -> tuple[list[np.ndarray], str]:
    """Per-residue embeddings for every record, from the sidecar or recomputed with ``model`` (default:
    :func:`resolve_model`); and where they came from."""
    import h5py

    ids = list(adata.obs_names)
    seqs = adata.obs[K.SEQUENCE].astype(str).tolist()
    path = per_residue_file or adata.uns.get(K.PER_RESIDUE)
    if path is not None and Path(path).exists():
        with h5py.File(path, "r") as f:
            groups = [g for g in f.keys() if g.startswith("layer")]
        recorded = list(np.atleast_1d(adata.uns.get(K.EMBED, {}).get("layers", [])))
        if layer is not None:
            group = f"layer{layer}"
        elif recorded and f"layer{int(recorded[0])}" in groups:
            group = f"layer{int(recorded[0])}"
        elif len(groups) == 1:
            group = groups[0]
        else:
            raise InputError(f"{path}: cannot tell which layer to use (groups: {', '.join(groups) or 'none'}); "
                             "pass --layer")
        if group not in groups:
            raise InputError(f"{path}: no per-residue group '{group}' (groups: {', '.join(groups) or 'none'})")
        arrays = read_residues(path, ids, group=group)
        for rid, s, a in zip(ids, seqs, arrays):
            if len(a) != len(s):
                raise InputError(f"record '{rid}': {len(a)} per-residue vectors in {path} for {len(s)} residues")
        return [a.astype(np.float32) for a in arrays], f"{path}:{group}"
    plm = model if model is not None and not isinstance(model, (str, Path)) else resolve_model(adata, model)
    from ..pp import embed_sequences

    res = embed_sequences(plm, seqs, layers=(-1 if layer is None else layer,), per_residue=True, progress=progress)
    key = next(iter(res.per_residue))
    return res.per_residue[key], f"recomputed:{plm.name}:layer{key}"


def _motif_masks(adata, motifs: str) -> tuple[list[np.ndarray] | None, str, pd.DataFrame | None]:
    from ..datasets import MOTIF_POSITIONS, motif_mask

    if motifs not in MOTIF_SOURCES:
        raise InputError(f"unknown motifs '{motifs}' (choose from {', '.join(MOTIF_SOURCES)})")
    if motifs == "auto":
        motifs = "planted" if MOTIF_POSITIONS in adata.obs else "none"
    if motifs == "none":
        return None, "none", None
    if motifs == "planted":
        return motif_mask(adata), "planted", None
    seqs = adata.obs[K.SEQUENCE].astype(str).tolist()
    table = locate_kinase_motifs(list(adata.obs_names), seqs)
    return motif_masks(table, list(adata.obs_names), [len(s) for s in seqs]), "kinase", table


def _medoids(X: Sequence[np.ndarray], labels: np.ndarray, classes: np.ndarray) -> dict[str, int]:
    """Per cluster, the member whose mean-pooled embedding is closest to the cluster mean."""
    pooled = np.stack([x.mean(0) for x in X])
    out = {}
    for c in classes:
        idx = np.flatnonzero(labels == c)
        d = ((pooled[idx] - pooled[idx].mean(0)) ** 2).sum(1)
        out[str(c)] = int(idx[np.argmin(d)])
    return out


def consensus_track(seqs: Sequence[str], tracks: Sequence[np.ndarray], members: Sequence[int], medoid: int) -> np.ndarray:
    """Mean importance (each track scaled to mean 1) of a cluster's members on the medoid's residues.

    Members are placed on the medoid by global alignment (Needleman-Wunsch, BLOSUM62), so residue i of
    the consensus is the average over members of their residue aligned to medoid residue i.
    """
    import parasail

    ref = seqs[medoid]
    total = np.zeros(len(ref))
    count = np.zeros(len(ref))
    for i in members:
        t = np.asarray(tracks[i], float)
        t = t / t.mean() if t.mean() > 0 else t
        if i == medoid:
            total += t
            count += 1
            continue
        tb = parasail.nw_trace_striped_16(seqs[i], ref, 10, 1, parasail.blosum62).traceback
        qi = ri = 0
        for qc, rc in zip(tb.query, tb.ref):
            if qc != "-" and rc != "-":
                total[ri] += t[qi]
                count[ri] += 1
            qi += qc != "-"
            ri += rc != "-"
    return (total / np.maximum(count, 1)).astype(np.float32)


def _as_record(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """A DataFrame as column arrays (h5ad-storable in ``uns``)."""
    return {c: df[c].to_numpy() for c in df.columns}


def explain(adata, clusters: str = "spectral", *, out: str | Path,
            methods: Sequence[str] = METHODS, plm_methods: Sequence[str] = ("integrated_gradients",),
            end_to_end: bool = True, compare_with: str | None = None, motifs: str = "auto",
            per_residue_file: str | Path | None = None, layer: int | None = None, model=None,
            proteins: Sequence[str] | None = None, aggregate: str = "positive", channels: int = 128,
            kernel_size: int = 5, n_members: int = 4, epochs: int = 40, test_size: float = 0.25, n_steps: int = 32,
            nt_samples: int = 16, n_random: int = 5, n_permutations: int = 1000,
            fractions: Sequence[float] = FRACTIONS, top_fraction: float = 0.1, figures: bool = True,
            random_state: int = 0, key_added: str = K.EXPLAIN, progress: bool = False,
            base_dir: str | Path | None = None) -> None:
    """Explain ``obs[clusters]`` residue by residue; tracks to ``out/explain_tracks.h5``, summary to ``uns[key_added]``.

    A surrogate CNN is fitted to the clustering on per-residue embeddings and attributed with every
    method in ``methods``; with ``end_to_end`` (and a neural PLM available) the PLM itself is attributed
    with ``plm_methods`` through the nearest-centre score. Each explanation is scored for faithfulness
    (deletion curves) and, where motifs are known (``motifs``: planted, kinase, auto), for plausibility.
    The PLM is ``model``, else the one the result was embedded with (searched from ``base_dir`` too), else,
    for a k-mer result, the bundled one (see :func:`resolve_model`). ``progress`` shows bars with time
    estimates for embedding, surrogate training and attribution.
    """
    t0 = time.perf_counter()
    labels = cluster_labels(adata, clusters)
    methods = resolve_methods(methods)
    plm_methods = resolve_methods(plm_methods) if end_to_end else []
    other = cluster_labels(adata, compare_with) if compare_with else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tracks_path = out / TRACKS_FILE
    if tracks_path.exists():
        tracks_path.unlink()
    ids = list(adata.obs_names)
    seqs = adata.obs[K.SEQUENCE].astype(str).tolist()
    stored = per_residue_file or adata.uns.get(K.PER_RESIDUE)
    plm = resolve_model(adata, model, base_dir) if stored is None or not Path(stored).exists() else None
    X, emb_source = per_residue_embeddings(adata, per_residue_file, layer, plm, progress=progress)
    masks, motif_source, motif_table = _motif_masks(adata, motifs)

    cnn_kw = dict(channels=channels, kernel_size=kernel_size, n_members=n_members, epochs=epochs, test_size=test_size,
                  random_state=random_state)
    sur = SurrogateCNN(**cnn_kw, progress=progress).fit(X, labels)
    classes = sur.classes_
    targets = np.searchsorted(classes, labels)
    medoids = _medoids(X, labels, classes)
    if proteins is None:
        keep = sorted(set(list(medoids.values())[:3]))
    else:
        missing = [p for p in proteins if p not in adata.obs_names]
        if missing:
            raise InputError(f"record '{missing[0]}': not in the AnnData (asked for a heatmap)")
        keep = [ids.index(p) for p in proteins]
    xi = dict(aggregate=aggregate, n_steps=n_steps, random_state=random_state)
    all_tracks: dict[str, dict[str, list[np.ndarray]]] = {}
    all_maps: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    all_tracks["surrogate"], all_maps["surrogate"] = explain_surrogate(
        sur.module_, X, targets, methods, keep_maps=keep, nt_samples=nt_samples, **xi,
        progress=f"attributing the surrogate ({len(methods)} methods per protein)" if progress else None)
    scorers = {"surrogate": surrogate_scorer(SurrogateScore(sur.module_), X, targets)}

    e2e_note = "not requested"
    if plm_methods:
        plm = plm or resolve_model(adata, model, base_dir)
        too_long = [rid for rid, s in zip(ids, seqs) if len(s) > plm.max_residues]
        if too_long:
            e2e_note = f"skipped: {len(too_long)} record(s) longer than {plm.max_residues} residues (e.g. '{too_long[0]}')"
            warnings.warn(f"end-to-end attribution {e2e_note}", stacklevel=2)
        else:
            from ..pp import embed_sequences

            plm_layer = plm.resolve_layer(-1 if layer is None else layer)
            pooled = embed_sequences(plm, seqs, layers=(plm_layer,), pooling="mean", progress=progress,
                                     device="cpu").pooled[plm_layer]  # PLMClusterScore's pooling
            centres, tau = plm_centres(pooled, labels, classes)
            score = PLMClusterScore(plm, centres, plm_layer, tau)
            all_tracks["plm"], all_maps["plm"] = explain_plm(
                score, seqs, targets, plm_methods, keep_maps=keep, nt_samples=max(4, nt_samples // 2), **xi,
                progress=f"attributing through {plm.name} ({len(plm_methods)} methods per protein)" if progress
                else None)
            scorers["plm"] = plm_scorer(score, seqs, targets)
            e2e_note = f"{plm.name} layer {plm_layer}, tau {tau:.4g}"

    deletion: dict[str, dict] = {src: {} for src in all_tracks}
    plaus: dict[str, dict] = {src: {} for src in all_tracks} if masks is not None else {}
    for src, by_method in all_tracks.items():
        for m, tr in by_method.items():
            curves = deletion_curves(scorers[src], tr, fractions, n_random, random_state)
            deletion[src][m] = {**curves.summary(), "top_curve": curves.top.mean(0),
                                "random_curve": curves.random.mean(0)}
            if masks is not None:
                p = enrichment(tr, masks, n_permutations, random_state)
                if motif_source == "planted":
                    p.update(planted_motif_auroc(tr, masks))
                plaus[src][m] = p
            write_residues(tracks_path, dict(zip(ids, tr)), group=f"{src}/{m}")
            for i, a in all_maps[src][m].items():
                write_residues(tracks_path, {ids[i]: a}, group=f"maps/{src}/{m}")

    overlap = None
    if other is not None:
        sur_b = SurrogateCNN(**cnn_kw).fit(X, other)
        tb, _ = explain_surrogate(sur_b.module_, X, np.searchsorted(sur_b.classes_, other), methods,
                                  nt_samples=nt_samples, **xi)
        jac = {m: jaccard_top(all_tracks["surrogate"][m], tb[m], top_fraction) for m in methods}
        for m in methods:
            write_residues(tracks_path, dict(zip(ids, tb[m])), group=f"compare/{compare_with}/{m}")
        tables = {m: overlap_table(jac[m], labels, other) for m in methods}
        overlap = {"with": compare_with, "test_accuracy_other": sur_b.test_accuracy_,
                   "top_fraction": top_fraction, "random_jaccard": random_jaccard(top_fraction),
                   "jaccard_mean": {m: float(jac[m].mean()) for m in methods},
                   "per_protein": {m: jac[m].astype(np.float32) for m in methods},
                   "per_cluster": {m: _as_record(tables[m]) for m in methods}}

    for src, by_method in all_tracks.items():
        for m, tr in by_method.items():
            cons = {c: consensus_track(seqs, tr, np.flatnonzero(labels == c), medoids[c]) for c in medoids}
            write_residues(tracks_path, cons, group=f"consensus/{src}/{m}")

    summary = {
        "params": dict(clusters=clusters, methods=list(methods), plm_methods=list(plm_methods),
                       end_to_end=end_to_end, compare_with=compare_with or "", motifs=motif_source,
                       per_residue=emb_source, aggregate=aggregate, channels=channels, kernel_size=kernel_size,
                       n_members=n_members, epochs=epochs, test_size=test_size, n_steps=n_steps, nt_samples=nt_samples,
                       n_random=n_random, n_permutations=n_permutations, fractions=list(map(float, fractions)),
                       top_fraction=top_fraction, random_state=random_state),
        "surrogate": {"train_accuracy": sur.train_accuracy_, "test_accuracy": sur.test_accuracy_,
                      "n_train": len(sur.train_index_), "n_test": len(sur.test_index_),
                      "n_clusters": len(classes), "chance_accuracy": float(np.bincount(targets).max() / len(targets)),
                      "reliable": bool(sur.test_accuracy_ >= RELIABLE_ACCURACY)},
        "end_to_end": e2e_note,
        "end_to_end_ran": "plm" in all_tracks,
        "deletion": deletion,
        "plausibility": plaus,
        "medoids": {c: ids[i] for c, i in medoids.items()},
        "heatmap_ids": [ids[i] for i in keep],
        "tracks_file": str(tracks_path),
    }
    if motif_table is not None:
        motif_table.to_csv(out / "kinase_motifs.csv", index=False)
        summary["motifs_found"] = _as_record(motif_summary(motif_table).reset_index())
        summary["motifs_file"] = str(out / "kinase_motifs.csv")
    if overlap is not None:
        summary["overlap"] = overlap
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    adata.uns[key_added] = summary
    if figures:
        from .plots import write_figures

        adata.uns[key_added]["figures"] = write_figures(adata, out / "figures", key=key_added)
