"""tl.neighbors / tl.cluster / estimators: tiny hand-checkable cases, seeds, bad input, sparsity."""

import tracemalloc

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from protlens import tl
from protlens.errors import InputError
from protlens.tl import LeidenClustering, SparseSpectralClustering, knn, knn_graph


def blobs(n=120, centers=4, d=8, seed=0):
    X, y = make_blobs(n, n_features=d, centers=centers, cluster_std=0.5, random_state=seed)
    adata = ad.AnnData(X.astype(np.float32))
    adata.obs["truth"] = y.astype(str)
    return adata


def test_knn_hand_checked_line():
    """Points on a line at 0, 1, 3, 7: nearest neighbours and distances are known by hand."""
    X = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    res = knn(X, 2, metric="euclidean")
    assert res.backend == "sklearn"
    assert res.indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert np.allclose(res.distances, [[1, 3], [1, 2], [2, 3], [4, 6]])
    dist, conn = knn_graph(res)
    assert dist.shape == (4, 4) and dist.nnz == 8
    assert (conn != conn.T).nnz == 0 and conn.diagonal().sum() == 0
    assert conn[0, 1] > conn[0, 2] > 0  # closer -> stronger


@pytest.mark.parametrize("method", ["faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_faiss_backends_agree_with_exact(method):
    X, _ = make_blobs(600, n_features=16, centers=5, random_state=1)
    exact = knn(X, 10, method="sklearn")
    other = knn(X, 10, method=method, nlist=8, nprobe=8)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.indices, other.indices)])
    assert recall > 0.95
    assert np.allclose(np.sort(exact.distances, 1)[:, 0], np.sort(other.distances, 1)[:, 0], atol=1e-4)


def test_backend_choice_by_size():
    from protlens.tl._neighbors import EXACT_MAX_N, SKLEARN_MAX_N, choose_backend

    assert choose_backend(SKLEARN_MAX_N) == "sklearn"
    assert choose_backend(SKLEARN_MAX_N + 1) in ("faiss-flat", "faiss-gpu")
    assert choose_backend(EXACT_MAX_N + 1) in ("faiss-ivf", "faiss-gpu")


def test_neighbors_writes_graph_and_params():
    a = blobs()
    tl.neighbors(a, n_neighbors=5)
    assert a.obsp["connectivities"].shape == (a.n_obs, a.n_obs)
    assert (a.obsp["distances"].getnnz(axis=1) == 5).all()
    assert a.uns["neighbors"]["params"]["backend"] == "sklearn"


@pytest.mark.parametrize("method", ["kmeans", "spectral", "leiden", "agglomerative"])
def test_methods_recover_blobs_and_are_reproducible(method):
    a = blobs()
    tl.cluster(a, method, n_clusters=4, random_state=3)
    tl.cluster(a, method, n_clusters=4, random_state=3, key_added="again")
    assert adjusted_rand_score(a.obs["truth"], a.obs[method]) == 1.0
    assert a.obs[method].tolist() == a.obs["again"].tolist()  # same seed, same labels
    assert a.obs[method].dtype == "category"
    assert a.uns[method]["n_clusters"] == 4
    assert a.uns[method]["params"]["method"] == method


@pytest.mark.parametrize("rule", ["eigengap", "silhouette", "stability"])
def test_automatic_k_is_chosen_and_recorded(rule):
    """Four well-separated blobs: every rule finds 4; the evidence and every candidate's labels are kept."""
    a = blobs()
    tl.cluster(a, "spectral", max_clusters=8, k_rule=rule)
    info = a.uns["spectral"]
    assert info["n_clusters"] == 4 and info["selection"] == rule
    assert info["k_by_rule"] == {"eigengap": 4, "silhouette": 4, "stability": 4}
    sweep = info["k_sweep"]
    assert sweep["k"].tolist() == list(range(2, 9))
    assert a.obsm["spectral_k_sweep"].shape == (a.n_obs, 7)
    # the stored k = 4 candidate is the reported clustering, and the eigengap is the Laplacian's
    assert adjusted_rand_score(a.obsm["spectral_k_sweep"][:, 2], a.obs["spectral"]) == 1.0
    lam = np.sort(1 - np.linalg.eigvalsh(_normalised_affinity(a.obsp["connectivities"])))
    assert np.allclose(sweep["eigengap"], np.diff(lam)[1:8], atol=1e-6)
    assert len(info["k_runner_up"]) == 2 and 4 not in info["k_runner_up"]


def _normalised_affinity(A):
    A = A.toarray()
    d = 1 / np.sqrt(A.sum(1))
    return d[:, None] * A * d[None, :]


def test_automatic_k_other_methods():
    a = blobs()
    tl.cluster(a, "kmeans", max_clusters=8, n_init=2)
    assert a.uns["kmeans"]["n_clusters"] == 4
    sweep = a.uns["kmeans"]["k_sweep"].set_index("k")
    assert sweep["silhouette"].idxmax() == 4
    # silhouette recomputed independently from the stored k = 4 labels (cosine = euclidean on unit rows)
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import normalize

    assert np.isclose(sweep.loc[4, "silhouette"], silhouette_score(normalize(a.X), a.obsm["kmeans_k_sweep"][:, 2]))
    tl.cluster(a, "leiden", resolutions=(0.1, 0.5, 1.0))
    assert len(a.uns["leiden"]["k_sweep"]) == 3
    assert adjusted_rand_score(a.obs["truth"], a.obs["leiden"]) > 0.9
    tl.cluster(a, "agglomerative", max_clusters=8, k_rule="stability")
    assert a.uns["agglomerative"]["n_clusters"] == 4


def test_stability_prefers_the_true_k():
    """Half-sample stability is near 1 at the true k and clearly lower where a blob must be split."""
    a = blobs(centers=3, seed=2)
    tl.cluster(a, "kmeans", max_clusters=6, k_rule="stability", n_init=3)
    st = a.uns["kmeans"]["k_sweep"].set_index("k")["stability"]
    assert st.loc[3] > 0.95 and st.loc[3] - st.loc[5] > 0.1
    with pytest.raises(InputError, match="does not apply"):
        tl.cluster(a, "kmeans", k_rule="eigengap")


def test_hdbscan_labels_noise_as_a_category():
    a = blobs()
    X = a.X.copy()
    X[0] = 100.0  # a far outlier
    a.X = X
    tl.cluster(a, "hdbscan", metric="euclidean")
    assert a.obs["hdbscan"].iloc[0] == "noise"
    assert a.uns["hdbscan"]["n_noise"] >= 1


def test_spectral_eigengap_on_disconnected_graph():
    """Two disconnected triangles: two zero Laplacian eigenvalues, k = 2 by eigengap."""
    A = sp.block_diag([np.ones((3, 3)) - np.eye(3)] * 2).tocsr()
    est = SparseSpectralClustering(max_clusters=4).fit(A)
    assert est.n_clusters_ == 2
    assert np.allclose(est.eigenvalues_[:2], 0, atol=1e-8)
    assert est.labels_.tolist() in ([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0])


def test_leiden_bisection_hits_requested_k():
    X, _ = make_blobs(200, n_features=8, centers=6, cluster_std=0.5, random_state=2)
    _, W = knn_graph(knn(X, 10, metric="euclidean"))
    est = LeidenClustering(n_clusters=6).fit(W)
    assert est.n_clusters_ == 6


def _rb_quality(W: sp.csr_matrix, labels: np.ndarray, resolution: float) -> float:
    """Reichardt-Bornholdt quality sum_ij (w_ij - resolution k_i k_j / 2m) [c_i = c_j], computed by hand."""
    k = np.asarray(W.sum(1)).ravel()
    same = labels[W.nonzero()[0]] == labels[W.nonzero()[1]]
    inside = W.data[same].sum()
    expected = sum(k[labels == c].sum() ** 2 for c in np.unique(labels)) / k.sum()
    return float(inside - resolution * expected)


@pytest.mark.parametrize("resolution", [0.5, 1.0, 2.0])
def test_leiden_optimises_the_rb_objective_reproducibly(resolution):
    """No worse than the planted partition on the objective it claims, the same partition for the same
    seed whatever the global RNG did, and that RNG left as it was."""
    import random

    X, y = make_blobs(300, n_features=8, centers=5, cluster_std=1.5, random_state=4)
    _, W = knn_graph(knn(X, 10, metric="euclidean"))
    W = sp.csr_matrix(W.maximum(W.T))
    W.setdiag(0)
    W.eliminate_zeros()
    a = LeidenClustering(resolution=resolution, random_state=7).fit(W).labels_
    random.seed(123)
    state = random.getstate()
    b = LeidenClustering(resolution=resolution, random_state=7).fit(W).labels_
    assert random.getstate() == state
    np.testing.assert_array_equal(a, b)
    assert _rb_quality(W, a, resolution) >= _rb_quality(W, y, resolution) - 1e-9


@pytest.mark.slow
def test_sparse_spectral_never_builds_dense_matrix():
    """n = 20,000: a dense n x n float64 would be 3.2 GB; the sparse path stays far below."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(loc=c, size=(5000, 3)) for c in (0, 10, 20, 30)]).astype(np.float32)
    _, W = knn_graph(knn(X, 10, metric="euclidean", method="faiss-flat"))
    tracemalloc.start()
    est = SparseSpectralClustering(n_clusters=4, random_state=0).fit(W)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200e6  # bytes; dense would be 3.2e9
    assert adjusted_rand_score(np.repeat(np.arange(4), 5000), est.labels_) > 0.99


def test_precomputed_similarity_path():
    a = blobs(60, centers=3)
    X = a.X / np.linalg.norm(a.X, axis=1, keepdims=True)
    a.obsp["sim"] = np.clip(X @ X.T, 0, 1)
    tl.cluster(a, "spectral", n_clusters=3, use_graph="sim", key_added="s")
    tl.cluster(a, "agglomerative", n_clusters=3, use_graph="sim", key_added="g")
    assert a.uns["g"]["params"]["linkage"] == "average"
    tl.neighbors(a, use_graph="sim", key_added="simknn", n_neighbors=5)
    tl.cluster(a, "leiden", n_clusters=3, use_graph="simknn_connectivities", key_added="l")
    for key in "sgl":
        assert adjusted_rand_score(a.obs["truth"], a.obs[key]) == 1.0
    with pytest.raises(InputError, match="vectors"):
        tl.cluster(a, "kmeans", use_graph="sim")


def test_bad_input_is_named():
    a = blobs(10, centers=2)
    with pytest.raises(InputError, match="n_clusters=20"):
        tl.cluster(a, "kmeans", n_clusters=20)
    with pytest.raises(InputError, match="at least 3"):
        tl.cluster(a[:2].copy(), "kmeans", n_clusters=1)
    bad = a.copy()
    X = bad.X.copy()
    X[4, 0] = np.nan
    bad.X = X
    with pytest.raises(InputError, match=bad.obs_names[4]):
        tl.cluster(bad, "spectral")
    with pytest.raises(InputError, match="empty"):
        tl.cluster(ad.AnnData(np.zeros((5, 0), dtype=np.float32)), "kmeans")
    with pytest.raises(InputError, match="unknown method"):
        tl.cluster(a, "dbscan")
    with pytest.raises(InputError, match="built from"):
        a.obsm["other"] = a.X.copy()
        tl.neighbors(a, n_neighbors=3)
        tl.cluster(a, "leiden", use_rep="other")
