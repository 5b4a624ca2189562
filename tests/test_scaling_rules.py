"""Size rules for large inputs (issue 22): UMAP on the stored kNN graph, IVF searched list by list."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from protlens import tl
from protlens.tl import _neighbors, _reduce


def _labelled_blobs(n: int = 400, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated Gaussian blobs and their labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(4, d))
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _blobs(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    return _labelled_blobs(n, d, seed)[0]


def _brute_cosine(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN, each point first, by a dense distance matrix."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = 1.0 - Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    np.fill_diagonal(D, -1.0)  # self first
    idx = np.argsort(D, axis=1, kind="stable")[:, : k + 1]
    dist = np.take_along_axis(D, idx, 1)
    dist[:, 0] = 0.0
    return idx, np.clip(dist, 0, None)


def test_knn_arrays_match_brute_force():
    X = _blobs()
    a = ad.AnnData(X)
    tl.neighbors(a, n_neighbors=10)
    idx, dist = _reduce.knn_arrays(a.obsp["distances"])
    ref_idx, ref_dist = _brute_cosine(X, 10)
    assert (idx == ref_idx).mean() > 0.99  # ties aside
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)


def test_umap_uses_the_stored_graph_from_the_size_rule(monkeypatch):
    """Above the size rule UMAP runs no neighbour search of its own, and the map still separates the blobs."""
    umap_ = pytest.importorskip("umap.umap_")
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    def no_search(*args, **kwargs):
        raise AssertionError("UMAP ran its own neighbour search")

    X, y = _labelled_blobs(300)
    a = ad.AnnData(X)
    tl.neighbors(a, n_neighbors=15)
    monkeypatch.setattr(_reduce, "UMAP_GRAPH_MIN_N", 0)
    monkeypatch.setattr(umap_, "nearest_neighbors", no_search)
    tl.project(a, "umap", random_state=0)
    assert a.uns["umap"]["params"]["neighbors"] == "kNN graph (uns['neighbors'])"
    assert cross_val_score(KNeighborsClassifier(10), a.obsm["X_umap"], y, cv=3).mean() > 0.95


def test_ivf_list_by_list_search_finds_the_query_by_query_neighbours(monkeypatch):
    """From IVF_BATCH_MIN_N the search runs list by list; it must return what the ordinary search does."""
    X = _blobs(2000, 32)
    ref = _neighbors.knn(X, 10, method="faiss-ivf", nlist=50, nprobe=8)  # 40 x 50 = n: same training
    monkeypatch.setattr(_neighbors, "IVF_BATCH_MIN_N", 0)
    new = _neighbors.knn(X, 10, method="faiss-ivf", nlist=50, nprobe=8)
    assert new.params["search"].startswith("by list")
    assert (new.indices == ref.indices).mean() > 0.99
    np.testing.assert_allclose(new.distances, ref.distances, atol=1e-5)


def test_umap_starts_from_pca_from_the_size_rule(monkeypatch):
    """Above UMAP_PCA_INIT_MIN_N no spectral layout is computed (its eigensolver stalls at 1M points);
    below it umap-learn's spectral start stays; both are recorded, and a user's ``init`` wins."""
    umap_ = pytest.importorskip("umap.umap_")

    def no_spectral(*args, **kwargs):
        raise AssertionError("UMAP computed a spectral layout")

    a = ad.AnnData(_blobs(200))
    tl.project(a, "umap", random_state=0)
    assert a.uns["umap"]["params"]["init"] == "spectral"
    monkeypatch.setattr(_reduce, "UMAP_PCA_INIT_MIN_N", 200)
    monkeypatch.setattr(umap_, "spectral_layout", no_spectral)
    tl.project(a, "umap", random_state=0)
    assert a.uns["umap"]["params"]["init"] == "pca"
    tl.project(a, "umap", random_state=0, init="random")
    assert a.uns["umap"]["params"]["init"] == "random"
