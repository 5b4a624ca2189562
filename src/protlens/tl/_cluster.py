"""``tl.cluster``: one entry point for every clustering method, writing obs + uns provenance."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from .. import _keys as K
from ..errors import InputError
from ._estimators import (
    HierarchicalClustering,
    KMeansClustering,
    LeidenClustering,
    SparseSpectralClustering,
)
from ._neighbors import neighbors
from ._utils import as_categorical_labels, check_n_obs, get_graph, get_rep

CLUSTER_METHODS = ("kmeans", "spectral", "leiden", "agglomerative", "hdbscan")
NOISE = "noise"


def _graph_for(adata: ad.AnnData, use_graph: str | None, use_rep: str, metric: str, random_state: int,
               what: str) -> tuple[str, np.ndarray | sp.csr_matrix]:
    """The affinity a graph method runs on: obsp[use_graph], else the kNN graph of use_rep.

    The kNN graph is built (and kept in obsp, like tl.neighbors) when absent; a graph built
    from another representation is an error rather than silently reused or overwritten.
    """
    if use_graph is None:
        built_from = adata.uns.get(K.NEIGHBORS, {}).get("params", {})
        if K.CONNECTIVITIES not in adata.obsp:
            neighbors(adata, metric=metric, use_rep=use_rep, random_state=random_state)
        elif built_from.get("use_rep") != use_rep:
            raise InputError(f"{what}: obsp['{K.CONNECTIVITIES}'] was built from '{built_from.get('use_rep')}', "
                             f"not '{use_rep}'; rerun tl.neighbors(use_rep='{use_rep}') or pass use_graph")
        use_graph = K.CONNECTIVITIES
    return use_graph, get_graph(adata, use_graph, what)


def _distances_from_similarity(S: np.ndarray | sp.csr_matrix, key: str, what: str) -> np.ndarray:
    """1 - s for a dense similarity with self-similarity 1 (e.g. normalised alignment scores)."""
    if sp.issparse(S):
        raise InputError(f"{what}: obsp['{key}'] is a sparse graph; this method needs a dense similarity "
                         "matrix (e.g. protlens.baselines.alignment) or vectors (use_rep)")
    if S.max() > 1 + 1e-6:
        raise InputError(f"{what}: obsp['{key}'] must be a similarity in [0, 1] (max is {S.max():.3g}); "
                         "normalise it first")
    D = 1.0 - (S + S.T) / 2
    np.fill_diagonal(D, 0.0)
    return np.clip(D, 0.0, None)


def cluster(adata: ad.AnnData, method: str, n_clusters: int | None = None, key_added: str | None = None,
            use_rep: str = "X", random_state: int = 0, use_graph: str | None = None, metric: str = "cosine",
            **params) -> None:
    """Cluster the sequences and write the labels to ``obs[key_added or method]``.

    ``kmeans``/``agglomerative``/``hdbscan`` work on ``use_rep`` vectors (cosine: rows are
    L2-normalised first); ``spectral``/``leiden`` work on a graph: ``obsp[use_graph]``, or the
    kNN graph of ``use_rep`` (built if missing). ``agglomerative``/``hdbscan`` also accept a
    dense similarity in ``obsp[use_graph]`` (distance = 1 - s). ``n_clusters=None`` chooses k
    (eigengap / silhouette / resolution sweep); the evidence goes to ``uns[key]``. Extra
    ``params`` go to the estimator (e.g. ``resolution``, ``linkage``, ``min_cluster_size``).
    Labels are categorical strings "0", "1", ... by decreasing size; HDBSCAN noise is "noise".
    """
    if method not in CLUSTER_METHODS:
        raise InputError(f"cluster: unknown method '{method}' (choose from {', '.join(CLUSTER_METHODS)})")
    what = f"cluster ({method})"
    check_n_obs(adata.n_obs, what)
    if n_clusters is not None and (int(n_clusters) != n_clusters or not 1 <= n_clusters < adata.n_obs):
        raise InputError(f"{what}: n_clusters={n_clusters} must be a whole number from 1 to n - 1 = "
                         f"{adata.n_obs - 1} (there are {adata.n_obs} sequences)")
    key = key_added or K.cluster_key(method)
    info: dict = {}
    if method == "kmeans":
        if use_graph is not None:
            raise InputError(f"{what}: k-means needs vectors (use_rep), not a graph; "
                             "use spectral, leiden or agglomerative with use_graph")
        est = KMeansClustering(n_clusters, metric=metric, random_state=random_state, **params)
        est.fit(get_rep(adata, use_rep, what))
        info = {"backend": est.backend_, "selection": "given" if n_clusters else "silhouette"}
        if est.scores_ is not None:
            info["silhouette_by_k"] = {str(k): v for k, v in est.scores_.items()}
    elif method in ("spectral", "leiden"):
        graph_key, A = _graph_for(adata, use_graph, use_rep, metric, random_state, what)
        if method == "spectral":
            est = SparseSpectralClustering(n_clusters, random_state=random_state, **params).fit(A)
            info = {"selection": "given" if n_clusters else "eigengap",
                    "laplacian_eigenvalues": est.eigenvalues_.astype(np.float64)}
        else:
            features = None
            if use_graph is None:
                X = get_rep(adata, use_rep, what)
                features = normalize(X) if metric == "cosine" else X
            est = LeidenClustering(n_clusters=n_clusters, random_state=random_state, metric="euclidean",
                                   **params).fit(A, features=features)
            info = {"selection": est.selection_, "resolution": est.resolution_,
                    "sweep": pd.DataFrame(est.sweep_) if est.sweep_ else None}
        info["graph"] = graph_key
    else:
        if use_graph is not None:
            X = _distances_from_similarity(get_graph(adata, use_graph, what), use_graph, what)
            est_metric = "precomputed"
        else:
            X = get_rep(adata, use_rep, what)
            X, est_metric = (normalize(X), "euclidean") if metric == "cosine" else (X, metric)
        if method == "agglomerative":
            params.setdefault("linkage", "average" if use_graph is not None else "ward")
            est = HierarchicalClustering(n_clusters, metric=est_metric, random_state=random_state, **params).fit(X)
            info = {"selection": "given" if n_clusters else "silhouette"}
            if est.scores_ is not None:
                info["silhouette_by_k"] = {str(k): v for k, v in est.scores_.items()}
        else:
            from sklearn.cluster import HDBSCAN

            if n_clusters is not None:
                raise InputError(f"{what}: HDBSCAN chooses the number of clusters itself; "
                                 "set min_cluster_size instead of n_clusters")
            params.setdefault("min_cluster_size", 5)
            est = HDBSCAN(metric=est_metric, copy=True, **params).fit(X)
            info = {"selection": "density (HDBSCAN)", "n_noise": int((est.labels_ < 0).sum())}
    labels = as_categorical_labels(est.labels_)
    k = int(labels.max()) + 1
    names = np.where(labels < 0, NOISE, labels.astype(str))
    categories = [str(i) for i in range(k)] + ([NOISE] if (labels < 0).any() else [])
    adata.obs[key] = pd.Categorical(names, categories=categories)
    adata.uns[key] = {
        "params": dict(method=method, n_clusters=n_clusters, use_rep=use_rep if use_graph is None else None,
                       use_graph=use_graph, metric=metric, random_state=random_state, **params),
        "n_clusters": k,
        **{k_: v for k_, v in info.items() if v is not None},
    }
