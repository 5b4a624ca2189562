"""``tl.project``: 2-D (or n-D) maps of the embeddings with openTSNE, UMAP or PCA."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import _keys as K
from ..errors import InputError
from ._utils import SINGLE_THREAD_MAX_N, get_rep

PROJECT_METHODS = {"tsne": K.X_TSNE, "umap": K.X_UMAP, "pca": K.X_PCA}
TSNE_AFFINITIES = ("auto", "perplexity", "graph")
#: From this n, ``affinities="auto"`` builds t-SNE's affinities on the stored kNN graph: openTSNE's own
#: perplexity-30 search (90 neighbours, Annoy) would be a second neighbour search of the same points.
TSNE_GRAPH_MIN_N = 50_000
#: From this n, UMAP takes its neighbours from the stored kNN graph (when it matches ``use_rep`` and the
#: metric) instead of its own NN-descent: 323 s of its 300k run, single-threaded (issue 22).
UMAP_GRAPH_MIN_N = 50_000
#: From this n, UMAP starts from PCA instead of umap-learn's spectral layout: at 1M clustered points its
#: eigensolver ran 11 min without finishing (benchmarks/scaling.py, issue 22); at 300k it finished.
UMAP_PCA_INIT_MIN_N = 500_000


def graph_affinities(distances: sp.spmatrix) -> sp.csr_matrix:
    """Uniform t-SNE affinities on a directed kNN graph, symmetrised by union and summing to 1.

    This is openTSNE's ``Uniform`` affinity (Boehm, Berens & Kobak 2022 show it gives t-SNE
    embeddings close to perplexity-based ones) computed from neighbours already found, e.g. by FAISS.
    Every stored entry is an edge, including explicit zeros (duplicate sequences at distance 0).
    """
    A = sp.csr_matrix(distances, dtype=np.float64, copy=True)
    A.data[:] = 1.0
    P = ((A + A.T) > 0).astype(np.float64).tocsr()
    P /= P.sum()
    return P


def _tsne(X: np.ndarray, n_components: int, metric: str, random_state: int, perplexity: float = 30.0,
          n_jobs: int | None = None, affinities: sp.spmatrix | None = None, **params) -> tuple[np.ndarray, dict]:
    """openTSNE: FFT-accelerated (Linderman 2019) and exact-neighbour-free, so it scales to 1e5+.

    With ``affinities`` (from :func:`graph_affinities`) no neighbour search is run and ``perplexity``
    is unused; otherwise perplexity is capped at (n - 1) / 3 so tiny inputs still run (with a warning).
    ``X`` always gives the PCA initialisation.
    """
    from openTSNE import TSNE
    from openTSNE.affinity import PrecomputedAffinities

    if n_jobs is None:
        n_jobs = 1 if len(X) <= SINGLE_THREAD_MAX_N else -1
    if affinities is not None:
        tsne = TSNE(n_components=n_components, random_state=random_state, n_jobs=n_jobs, **params)
        return np.asarray(tsne.fit(X, affinities=PrecomputedAffinities(affinities, normalize=False))), {}
    cap = (len(X) - 1) / 3
    if perplexity > cap:
        warnings.warn(f"project (tsne): perplexity {perplexity} is too large for {len(X)} points; "
                      f"using {cap:.1f}", stacklevel=3)
        perplexity = cap
    tsne = TSNE(n_components=n_components, perplexity=perplexity, metric=metric, random_state=random_state,
                n_jobs=n_jobs, **params)
    return np.asarray(tsne.fit(X)), {"perplexity": perplexity}


def _stored_graph(adata: ad.AnnData, neighbors_key: str, use_rep: str, metric: str) -> sp.spmatrix | None:
    """The directed kNN distances of ``tl.neighbors`` when they were built on ``use_rep`` with ``metric``."""
    info = adata.uns.get(neighbors_key)
    if not isinstance(info, dict):
        return None
    params = info.get("params", {})
    key = info.get("distances_key", K.DISTANCES)
    if params.get("use_rep") != use_rep or params.get("metric") != metric or key not in adata.obsp:
        return None
    return adata.obsp[key]


def _tsne_affinities(adata: ad.AnnData, affinities: str, neighbors_key: str, use_rep: str,
                     metric: str) -> tuple[sp.csr_matrix | None, str]:
    """t-SNE affinities for ``project``: (matrix, or None for openTSNE's own search; how, for ``uns``)."""
    graph = _stored_graph(adata, neighbors_key, use_rep, metric)
    if affinities == "graph" and graph is None:
        raise InputError(f"project (tsne): affinities='graph' needs a kNN graph of '{use_rep}' ({metric}) "
                         f"under uns['{neighbors_key}']; run protlens.tl.neighbors first")
    if affinities == "graph" or (affinities == "auto" and graph is not None and adata.n_obs >= TSNE_GRAPH_MIN_N):
        return graph_affinities(graph), f"uniform on kNN graph (uns['{neighbors_key}'])"
    return None, "perplexity"


def knn_arrays(distances: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of a directed kNN graph with each point first, as UMAP's ``precomputed_knn`` wants."""
    D = sp.csr_matrix(distances)
    n, k = D.shape[0], int(np.diff(D.indptr).min())
    if k != np.diff(D.indptr).max():
        raise InputError("project (umap): the stored kNN graph has rows of different lengths")
    idx, dist = D.indices.reshape(n, k), D.data.reshape(n, k)
    order = np.argsort(dist, axis=1, kind="stable")
    idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
    return (np.hstack([np.arange(n)[:, None], idx]).astype(np.int64),
            np.hstack([np.zeros((n, 1)), dist]).astype(np.float32))


def _umap(X: np.ndarray, n_components: int, metric: str, random_state: int, n_neighbors: int = 15,
          min_dist: float = 0.1, knn: tuple[np.ndarray, np.ndarray] | None = None,
          **params) -> tuple[np.ndarray, dict]:
    """umap-learn; with ``knn`` (from :func:`knn_arrays`) it runs no neighbour search of its own."""
    with warnings.catch_warnings():  # umap warns at import that optional TensorFlow is absent
        warnings.simplefilter("ignore", ImportWarning)
        from umap import UMAP

    n_neighbors = min(n_neighbors, len(X) - 1, *([knn[0].shape[1]] if knn is not None else []))
    # A fixed random_state makes UMAP single-threaded; say so rather than let it warn.
    model = UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                 random_state=random_state, n_jobs=1, precomputed_knn=knn or (None, None, None), **params)
    with warnings.catch_warnings():  # without NNDescent's index UMAP cannot .transform new points; we never do
        warnings.filterwarnings("ignore", message="precomputed_knn.2. .knn_search_index.")
        Y = model.fit_transform(X)
    return Y, {"n_neighbors": n_neighbors, "min_dist": min_dist}


def _pca(X: np.ndarray, n_components: int, metric: str, random_state: int, **params) -> tuple[np.ndarray, dict]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    n_components = min(n_components, *X.shape)
    pca = PCA(n_components=n_components, random_state=random_state, **params)
    Y = pca.fit_transform(normalize(X) if metric == "cosine" else X)
    return Y, {"explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float64)}


def project(adata: ad.AnnData, method: str = "tsne", use_rep: str = "X", random_state: int = 0,
            n_components: int = 2, metric: str = "cosine", key_added: str | None = None,
            affinities: str = "auto", neighbors_key: str = K.NEIGHBORS, **params) -> None:
    """Embed ``use_rep`` into ``n_components`` dimensions; writes ``obsm["X_<method>"]``.

    ``metric="cosine"`` is honoured by t-SNE/UMAP directly and by PCA through L2-normalised
    rows. t-SNE ``affinities``: ``perplexity`` (openTSNE's own neighbour search), ``graph``
    (uniform on the kNN graph of ``tl.neighbors`` under ``neighbors_key``, no second search) or
    ``auto`` (graph from :data:`TSNE_GRAPH_MIN_N` points when that graph matches ``use_rep`` and
    ``metric``); the choice is recorded in ``uns``. UMAP takes its neighbours from that graph from
    :data:`UMAP_GRAPH_MIN_N` points (recorded as ``neighbors``) and starts from PCA instead of a
    spectral layout from :data:`UMAP_PCA_INIT_MIN_N` (recorded as ``init``). Extra ``params`` go to openTSNE.TSNE /
    umap.UMAP / sklearn PCA.
    """
    if method not in PROJECT_METHODS:
        raise InputError(f"project: unknown method '{method}' (choose from {', '.join(PROJECT_METHODS)})")
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"project: unknown metric '{metric}' (cosine or euclidean)")
    if affinities not in TSNE_AFFINITIES:
        raise InputError(f"project: unknown affinities '{affinities}' (choose from {', '.join(TSNE_AFFINITIES)})")
    X = get_rep(adata, use_rep, f"project ({method})")
    run = {"tsne": _tsne, "umap": _umap, "pca": _pca}[method]
    if method == "umap" and "init" not in params:
        params["init"] = "pca" if adata.n_obs >= UMAP_PCA_INIT_MIN_N else "spectral"
    if method == "tsne":
        P, how = _tsne_affinities(adata, affinities, neighbors_key, use_rep, metric)
        Y, resolved = run(X, n_components, metric, random_state, affinities=P, **params)
        resolved["affinities"] = how
    elif method == "umap" and adata.n_obs >= UMAP_GRAPH_MIN_N and \
            (graph := _stored_graph(adata, neighbors_key, use_rep, metric)) is not None:
        Y, resolved = run(X, n_components, metric, random_state, knn=knn_arrays(graph), **params)
        resolved["neighbors"] = f"kNN graph (uns['{neighbors_key}'])"
    else:
        Y, resolved = run(X, n_components, metric, random_state, **params)
    key = key_added or PROJECT_METHODS[method]
    adata.obsm[key] = np.asarray(Y, dtype=np.float32)
    record = dict(method=method, use_rep=use_rep, n_components=n_components, metric=metric,
                  random_state=random_state)
    record.update(params)
    record.update({k: v for k, v in resolved.items() if k != "explained_variance_ratio"})
    adata.uns[key.removeprefix("X_")] = {"params": record}
    if method == "pca":
        adata.uns[key.removeprefix("X_")]["variance_ratio"] = resolved["explained_variance_ratio"]
