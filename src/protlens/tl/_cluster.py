"""``tl.cluster``: one entry point for every clustering method, writing obs + uns provenance."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from .. import _keys as K
from ..errors import InputError
from ._choose_k import DEFAULT_RULE, RULES, ClusterData, k_sweep
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


def _check_similarity(S: np.ndarray | sp.csr_matrix, key: str, what: str) -> None:
    """Distance methods read 1 - s: they need a dense similarity with self-similarity 1 (e.g. alignment scores)."""
    if sp.issparse(S):
        raise InputError(f"{what}: obsp['{key}'] is a sparse graph; this method needs a dense similarity "
                         "matrix (e.g. protlens.baselines.alignment) or vectors (use_rep)")
    if S.max() > 1 + 1e-6:
        raise InputError(f"{what}: obsp['{key}'] must be a similarity in [0, 1] (max is {S.max():.3g}); "
                         "normalise it first")


def _exact_low_rank(X: np.ndarray) -> np.ndarray:
    """``X`` rotated onto its row space when it has more columns than rows (e.g. 8000 3-mer counts for
    a few hundred proteins): ``U S`` from the SVD has exactly the same pairwise distances, so k-means,
    Ward and silhouettes are unchanged, at a fraction of the cost."""
    n, d = X.shape
    if d <= n:
        return X
    U, S, _ = np.linalg.svd(X.astype(np.float64), full_matrices=False)
    return np.ascontiguousarray((U * S).astype(np.float32))


def _cluster_data(adata: ad.AnnData, method: str, use_rep: str, use_graph: str | None, metric: str,
                  random_state: int, what: str) -> tuple[ClusterData, str | None]:
    """The input of ``method`` (vectors, dense similarity and/or graph) and the graph key it used."""
    graph_key = None
    A = S = X = None
    if method in ("spectral", "leiden"):
        graph_key, A = _graph_for(adata, use_graph, use_rep, metric, random_state, what)
    built = adata.uns.get(K.NEIGHBORS, {})
    nb = built.get("params", {})
    if use_graph is not None and use_graph == built.get("connectivities_key", K.CONNECTIVITIES):
        # the kNN graph of tl.neighbors: its source (a similarity or vectors) gives silhouettes and half-sample graphs
        if nb.get("use_graph") is not None and nb["use_graph"] in adata.obsp:
            use_graph_source, use_rep = nb["use_graph"], None
        else:
            use_graph_source, use_rep = None, nb.get("use_rep") or use_rep
    else:
        use_graph_source = use_graph
    if use_graph_source is not None:
        G = get_graph(adata, use_graph_source, what)
        if method in ("agglomerative", "hdbscan"):
            _check_similarity(G, use_graph_source, what)
        if not sp.issparse(G):
            S = G
    elif use_rep is not None:
        X = get_rep(adata, use_rep, what)
        X = _exact_low_rank(normalize(X) if metric == "cosine" else X)
    nn = nb.get("n_neighbors", 15)
    return ClusterData(X=X, S=S, A=A, n_neighbors=int(nn), metric=metric if X is not None else "cosine",
                       random_state=random_state), graph_key


def cluster(adata: ad.AnnData, method: str, n_clusters: int | None = None, key_added: str | None = None,
            use_rep: str = "X", random_state: int = 0, use_graph: str | None = None, metric: str = "cosine",
            k_rule: str | None = None, **params) -> None:
    """Cluster the sequences and write the labels to ``obs[key_added or method]``.

    ``kmeans``/``agglomerative``/``hdbscan`` work on ``use_rep`` vectors (cosine: rows are
    L2-normalised first); ``spectral``/``leiden`` work on a graph: ``obsp[use_graph]``, or the
    kNN graph of ``use_rep`` (built if missing). ``agglomerative``/``hdbscan`` also accept a
    dense similarity in ``obsp[use_graph]`` (distance = 1 - s).

    ``n_clusters=None`` chooses k: the method runs at every candidate k (Leiden: every resolution of
    a grid), each candidate is scored by every rule (eigengap, silhouette, modularity, half-sample
    stability; see :mod:`protlens.tl._choose_k`) and ``k_rule`` (default: the method's entry of
    ``DEFAULT_RULE``) decides. ``uns[key]`` records the rule, the k every rule would choose, the
    runner-up candidates and the whole sweep; ``obsm[key + '_k_sweep']`` holds every candidate's
    labels. Extra ``params`` go to the estimator (e.g. ``resolution``, ``linkage``,
    ``min_cluster_size``; ``min_clusters``/``max_clusters``/``resolutions``/``stability_draws`` to
    the sweep). Labels are categorical strings "0", "1", ... by decreasing size; HDBSCAN noise is "noise".
    """
    if method not in CLUSTER_METHODS:
        raise InputError(f"cluster: unknown method '{method}' (choose from {', '.join(CLUSTER_METHODS)})")
    what = f"cluster ({method})"
    check_n_obs(adata.n_obs, what)
    if n_clusters is not None and (int(n_clusters) != n_clusters or not 1 <= n_clusters < adata.n_obs):
        raise InputError(f"{what}: n_clusters={n_clusters} must be a whole number from 1 to n - 1 = "
                         f"{adata.n_obs - 1} (there are {adata.n_obs} sequences)")
    if method == "kmeans" and use_graph is not None:
        raise InputError(f"{what}: k-means needs vectors (use_rep), not a graph; "
                         "use spectral, leiden or agglomerative with use_graph")
    if method == "agglomerative":
        params.setdefault("linkage", "average" if use_graph is not None else "ward")
    key = key_added or K.cluster_key(method)
    data, graph_key = _cluster_data(adata, method, use_rep, use_graph, metric, random_state, what)
    info: dict = {"graph": graph_key}
    sweep = None
    if n_clusters is None and method in RULES and "resolution" not in params:
        rule = k_rule or DEFAULT_RULE[method]
        if rule not in RULES[method]:
            raise InputError(f"{what}: k_rule '{rule}' does not apply (choose from {', '.join(RULES[method])})")
        sweep_params = {k: params.pop(k) for k in ("min_clusters", "max_clusters", "resolutions", "stability_draws")
                        if k in params}
        sweep = k_sweep(method, data, random_state=random_state, **sweep_params, **params)
        if k_rule is None and not sweep.defined(rule):  # e.g. no silhouette on a bare graph, no stability on 3 points
            rule = next((r for r in RULES[method] if sweep.defined(r)), rule)
        order = sweep.ranked(rule)
        raw = sweep.labels[:, order[0]]
        info.update(selection=rule, k_sweep_choice=int(order[0]), k_by_rule=sweep.choice_by_rule(),
                    k_runner_up=np.asarray([int(sweep.table["k"].iat[j]) for j in order[1:3]], dtype=np.int64),
                    k_sweep=sweep.table)
        if method == "leiden":
            info["resolution"] = float(sweep.table["resolution"].iat[order[0]])
    elif method == "kmeans":
        est = KMeansClustering(n_clusters, random_state=random_state, **params).fit(data.X)
        raw = est.labels_
        info.update(backend=est.backend_, selection="given")
    elif method == "spectral":
        est = SparseSpectralClustering(n_clusters, random_state=random_state, **params).fit(data.graph())
        raw = est.labels_
        info.update(selection="given", laplacian_eigenvalues=est.eigenvalues_.astype(np.float64))
    elif method == "leiden":
        est = LeidenClustering(n_clusters=n_clusters, random_state=random_state, **params).fit(data.graph())
        raw = est.labels_
        info.update(selection=est.selection_, resolution=est.resolution_,
                    sweep=pd.DataFrame(est.sweep_) if est.sweep_ else None)
    else:
        D, est_metric = data.distances()
        if method == "agglomerative":
            raw = HierarchicalClustering(n_clusters, metric=est_metric, random_state=random_state,
                                         **params).fit(D).labels_
            info["selection"] = "given"
        else:
            from sklearn.cluster import HDBSCAN

            if n_clusters is not None:
                raise InputError(f"{what}: HDBSCAN chooses the number of clusters itself; "
                                 "set min_cluster_size instead of n_clusters")
            params.setdefault("min_cluster_size", 5)
            raw = HDBSCAN(metric=est_metric, copy=True, **params).fit(D).labels_
            info.update(selection="density (HDBSCAN)", n_noise=int((raw < 0).sum()))
    labels = as_categorical_labels(raw)
    k = int(labels.max()) + 1
    names = np.where(labels < 0, NOISE, labels.astype(str))
    categories = [str(i) for i in range(k)] + ([NOISE] if (labels < 0).any() else [])
    adata.obs[key] = pd.Categorical(names, categories=categories)
    adata.uns[key] = {
        "params": dict(method=method, n_clusters=n_clusters, use_rep=use_rep if use_graph is None else None,
                       use_graph=use_graph, metric=metric, random_state=random_state,
                       k_rule=info.get("selection") if sweep is not None else None, **params),
        "n_clusters": k,
        **{k_: v for k_, v in info.items() if v is not None},
    }
    if sweep is not None:
        adata.obsm[sweep_key(key)] = sweep.labels
    elif sweep_key(key) in adata.obsm:
        del adata.obsm[sweep_key(key)]


def sweep_key(key: str) -> str:
    """obsm key of the labels of every candidate of an automatic-k clustering ``key``."""
    return f"{key}_k_sweep"
