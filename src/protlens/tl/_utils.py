"""Input checks shared by the tl steps: one place that turns bad data into a clear InputError."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..errors import InputError

MIN_OBS = 3


def _names(adata: ad.AnnData, rows: np.ndarray, limit: int = 5) -> str:
    ids = [str(adata.obs_names[i]) for i in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(ids) + more


def check_n_obs(n: int, what: str) -> None:
    if n < MIN_OBS:
        raise InputError(f"{what}: needs at least {MIN_OBS} sequences, got {n}")


def get_rep(adata: ad.AnnData, use_rep: str, what: str) -> np.ndarray:
    """The representation ``use_rep`` ("X" or an obsm key) as a finite float32 array."""
    if use_rep == "X":
        X = adata.X
    elif use_rep in adata.obsm:
        X = adata.obsm[use_rep]
    else:
        raise InputError(f"{what}: no representation '{use_rep}' (obsm has: {', '.join(adata.obsm) or 'nothing'})")
    if X is None or X.ndim != 2 or X.shape[1] == 0:
        raise InputError(f"{what}: '{use_rep}' is empty; embed the sequences first (protlens.pp.embed)")
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    check_n_obs(X.shape[0], what)
    X = np.ascontiguousarray(X, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise InputError(f"{what}: '{use_rep}' has NaN or infinite values in {len(bad)} sequence(s): "
                         f"{_names(adata, bad)}")
    return X


def get_graph(adata: ad.AnnData, key: str, what: str) -> np.ndarray | sp.csr_matrix:
    """obsp[key] as a symmetric, non-negative, finite affinity (sparse CSR or dense)."""
    if key not in adata.obsp:
        raise InputError(f"{what}: no graph/similarity matrix obsp['{key}'] "
                         f"(obsp has: {', '.join(adata.obsp) or 'nothing'})")
    check_n_obs(adata.n_obs, what)
    A = adata.obsp[key]
    A = sp.csr_matrix(A, dtype=np.float64) if sp.issparse(A) else np.asarray(A, dtype=np.float64)
    values = A.data if sp.issparse(A) else A
    if not np.isfinite(values).all():
        raise InputError(f"{what}: obsp['{key}'] has NaN or infinite entries")
    if (values < 0).any():
        raise InputError(f"{what}: obsp['{key}'] has negative entries; it must be a similarity (>= 0)")
    return A


def as_categorical_labels(labels: np.ndarray) -> np.ndarray:
    """Integer labels renumbered by decreasing cluster size (0 = largest), ties by first appearance.

    Noise (-1, from HDBSCAN) stays -1. Renumbering makes labels comparable across runs and
    readable in figures.
    """
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, dtype=np.int64)
    ids, first, counts = np.unique(labels[labels >= 0], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    for new, old in enumerate(ids[order]):
        out[labels == old] = new
    return out


#: Below this many points, native thread pools are limited to one thread: the work is too
#: small to share, and OpenMP spin-waiting on a busy machine made k-means 30x slower.
SINGLE_THREAD_MAX_N = 5_000


def thread_limit(n: int):
    """Context manager: one BLAS/OpenMP thread for small inputs, the default otherwise."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1) if n <= SINGLE_THREAD_MAX_N else nullcontext()
