"""kNN graph: exact for small n, FAISS (exact, IVF, or GPU) as n grows; kernel weights on top.

The backend is picked by size so that the same call works on 300 kinases and on a proteome,
and the choice is written to ``uns[key]["params"]["backend"]``: approximate search is a
scientific choice the reader of a result must be able to see.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import _keys as K
from ..errors import InputError
from ._utils import check_n_obs, get_graph, get_rep

METRICS = ("cosine", "euclidean")
METHODS = ("auto", "sklearn", "faiss-flat", "faiss-ivf", "faiss-hnsw", "faiss-gpu")
#: Up to this n, scikit-learn's exact brute-force search (no FAISS import, bit-stable).
SKLEARN_MAX_N = 5_000
#: Up to this n, FAISS exact search; beyond it, FAISS IVF (sub-quadratic, deterministic).
EXACT_MAX_N = 20_000
#: From this n, IVF trains its lists on 40 points per list (FAISS' lower bound; all points below) and
#: searches list by list (queries grouped per list, one GEMM each: FAISS ``big_batch_search``), which
#: finds the same neighbours as query-by-query search in 0.45x its CPU time at 100k (issue 22).
IVF_BATCH_MIN_N = 100_000


@dataclass
class KnnResult:
    """Neighbours of every point, self excluded, nearest first."""

    indices: np.ndarray  # (n, k) int64
    distances: np.ndarray  # (n, k) float32
    backend: str
    params: dict


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    except ImportError:
        return False


def choose_backend(n: int, method: str = "auto") -> str:
    """Resolve ``method="auto"`` to a concrete backend for ``n`` points."""
    if method not in METHODS:
        raise InputError(f"neighbors: unknown method '{method}' (choose from {', '.join(METHODS)})")
    if method != "auto":
        return method
    if n <= SKLEARN_MAX_N:
        return "sklearn"
    if gpu_available():
        return "faiss-gpu"
    return "faiss-flat" if n <= EXACT_MAX_N else "faiss-ivf"


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a k+1 search (or its last hit if duplicates hid it)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def knn(X: np.ndarray, n_neighbors: int = 15, metric: str = "cosine", method: str = "auto",
        random_state: int = 0, nlist: int | None = None, nprobe: int | None = None,
        hnsw_m: int = 32, ef_search: int | None = None) -> KnnResult:
    """k nearest neighbours of every row of ``X`` (itself excluded).

    Cosine runs as inner product on L2-normalised rows and returns ``1 - cos``; euclidean
    returns the L2 distance. IVF uses ``nlist = 4 sqrt(n)`` lists probing ``nprobe = 32`` by
    default; HNSW is offered but not chosen automatically because its parallel build is not
    bit-reproducible.
    """
    if metric not in METRICS:
        raise InputError(f"neighbors: unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    n, d = X.shape
    check_n_obs(n, "neighbors")
    if not 1 <= n_neighbors < n:
        raise InputError(f"neighbors: n_neighbors must be between 1 and n - 1 = {n - 1}, got {n_neighbors}")
    backend = choose_backend(n, method)
    X = np.ascontiguousarray(X, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InputError(f"neighbors: {int((norms == 0).sum())} embedding(s) are all zero; "
                             "cosine distance is undefined for them (use metric='euclidean')")
        X = X / norms
    k1 = n_neighbors + 1
    params: dict = {}
    if backend == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k1, metric=metric, algorithm="brute").fit(X)
        dist, idx = nn.kneighbors(X)
    else:
        import faiss

        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if backend in ("faiss-flat", "faiss-gpu"):
            index = faiss.IndexFlat(d, faiss_metric)
            if backend == "faiss-gpu":
                if not gpu_available():
                    raise InputError("neighbors: method 'faiss-gpu' needs faiss with CUDA and a visible GPU")
                index = faiss.index_cpu_to_all_gpus(index)
        elif backend == "faiss-ivf":
            nlist = nlist or int(min(max(4 * np.sqrt(n), 16), n // 39 or 1))
            nprobe = min(nprobe or 32, nlist)
            index = faiss.IndexIVFFlat(faiss.IndexFlat(d, faiss_metric), d, nlist, faiss_metric)
            index.cp.seed = int(random_state)
            if n >= IVF_BATCH_MIN_N:
                index.cp.max_points_per_centroid = 40
                params.update(train_points=min(n, 40 * nlist), search="by list (faiss big_batch_search)")
            index.train(X)
            index.nprobe = nprobe
            params.update(nlist=nlist, nprobe=nprobe)
        else:  # faiss-hnsw
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss_metric)
            index.hnsw.efSearch = ef_search or max(2 * k1, 64)
            params.update(hnsw_m=hnsw_m, ef_search=index.hnsw.efSearch)
        index.add(X)
        if backend == "faiss-ivf" and n >= IVF_BATCH_MIN_N:
            import contextlib
            import io

            from faiss.contrib.big_batch_search import big_batch_search

            with contextlib.redirect_stdout(io.StringIO()):  # it prints progress whatever its verbosity
                sims, idx = big_batch_search(index, X, k1)
        else:
            sims, idx = index.search(X, k1)
        if metric == "cosine":
            dist = 1.0 - sims
        else:
            dist = np.sqrt(np.maximum(sims, 0.0))
        missing = idx < 0  # IVF can return fewer than k hits for tiny lists
        if missing.any():
            raise InputError(f"neighbors: approximate search found fewer than {n_neighbors} neighbours for "
                             f"{int(missing.any(axis=1).sum())} points; raise nprobe or use method='faiss-flat'")
    idx, dist = _drop_self(idx.astype(np.int64), np.maximum(dist, 0).astype(np.float32), n_neighbors)
    order = np.argsort(dist, axis=1, kind="stable")
    idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
    return KnnResult(idx, dist, backend, params)


def knn_from_similarity(S: np.ndarray | sp.spmatrix, n_neighbors: int) -> KnnResult:
    """Top-k neighbours from a precomputed similarity in [0, 1] (distance = 1 - s)."""
    S = S.toarray() if sp.issparse(S) else np.array(S, dtype=np.float64)
    n = S.shape[0]
    if not 1 <= n_neighbors < n:
        raise InputError(f"neighbors: n_neighbors must be between 1 and n - 1 = {n - 1}, got {n_neighbors}")
    np.fill_diagonal(S, -np.inf)
    idx = np.argpartition(-S, n_neighbors - 1, axis=1)[:, :n_neighbors]
    sims = np.take_along_axis(S, idx, 1)
    order = np.argsort(-sims, axis=1, kind="stable")
    idx, sims = np.take_along_axis(idx, order, 1), np.take_along_axis(sims, order, 1)
    return KnnResult(idx.astype(np.int64), np.clip(1.0 - sims, 0, None).astype(np.float32), "precomputed", {})


def knn_graph(result: KnnResult) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(distances, connectivities) as sparse n x n matrices.

    ``distances`` keeps the directed kNN distances (scanpy's layout). ``connectivities`` is
    the adaptive Gaussian kernel of Haghverdi et al. (2016; scanpy's ``method="gauss"``):
    ``w_ij = sqrt(2 s_i s_j / (s_i^2 + s_j^2)) exp(-d_ij^2 / (s_i^2 + s_j^2))`` with ``s_i``
    the median distance of i to its neighbours, symmetrised over the union of kNN edges.
    Local widths make dense and sparse regions of embedding space equally connected.
    """
    idx, dist = result.indices, result.distances.astype(np.float64)
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    distances = sp.csr_matrix((dist.ravel(), (rows, idx.ravel())), shape=(n, n))
    sigma = np.median(dist, axis=1)
    positive = sigma[sigma > 0]
    sigma = np.where(sigma > 0, sigma, positive.min() if len(positive) else 1.0)
    s_i, s_j = sigma[rows], sigma[idx.ravel()]
    denom = s_i**2 + s_j**2
    w = np.sqrt(2 * s_i * s_j / denom) * np.exp(-dist.ravel() ** 2 / denom)
    W = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    W.eliminate_zeros()
    return distances, W


def neighbors(adata: ad.AnnData, n_neighbors: int = 15, metric: str = "cosine", use_rep: str = "X",
              method: str = "auto", random_state: int = 0, key_added: str | None = None,
              use_graph: str | None = None, **params) -> None:
    """kNN graph of the embeddings (or of a precomputed similarity in ``obsp[use_graph]``).

    Writes ``obsp["distances"]``/``obsp["connectivities"]`` (prefixed ``{key_added}_`` when
    given) and ``uns["neighbors"]`` (or ``uns[key_added]``) with the backend chosen by size.
    """
    if use_graph is not None:
        result = knn_from_similarity(get_graph(adata, use_graph, "neighbors"), n_neighbors)
    else:
        result = knn(get_rep(adata, use_rep, "neighbors"), n_neighbors, metric, method, random_state, **params)
    distances, connectivities = knn_graph(result)
    key = key_added or K.NEIGHBORS
    dkey = f"{key_added}_{K.DISTANCES}" if key_added else K.DISTANCES
    ckey = f"{key_added}_{K.CONNECTIVITIES}" if key_added else K.CONNECTIVITIES
    adata.obsp[dkey] = distances
    adata.obsp[ckey] = connectivities
    adata.uns[key] = {
        "connectivities_key": ckey,
        "distances_key": dkey,
        "params": dict(n_neighbors=n_neighbors, metric=metric if use_graph is None else "1 - similarity",
                       use_rep=use_rep if use_graph is None else None, use_graph=use_graph, method=method,
                       backend=result.backend, kernel="gauss (Haghverdi 2016)", random_state=random_state,
                       **result.params),
    }
