"""tl.evaluate against scikit-learn's metrics; chance levels; missing labels; tl.project."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from protlens import tl
from protlens.errors import InputError


def labelled():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 5)).astype(np.float32) + np.repeat(np.eye(5)[:3] * 6, 20, axis=0)
    a = ad.AnnData(X, obs=pd.DataFrame({"truth": y}, index=[f"s{i}" for i in range(60)]))
    tl.cluster(a, "kmeans", n_clusters=3)
    a.obs["rand"] = pd.Categorical(rng.integers(0, 3, 60).astype(str))
    return a


def test_matches_sklearn_and_reports_chance():
    a = labelled()
    table = tl.evaluate(a, "truth", cluster_keys=["kmeans", "rand"], n_boot=20)
    y = a.obs["truth"].astype(str)
    for key in ("kmeans", "rand"):
        c = a.obs[key].astype(str)
        assert table.loc[key, "ARI"] == pytest.approx(skm.adjusted_rand_score(y, c))
        assert table.loc[key, "NMI"] == pytest.approx(skm.normalized_mutual_info_score(y, c))
        assert table.loc[key, "AMI"] == pytest.approx(skm.adjusted_mutual_info_score(y, c))
        assert table.loc[key, "v_measure"] == pytest.approx(skm.v_measure_score(y, c))
        assert table.loc[key, "ARI_ci_low"] <= table.loc[key, "ARI"] <= table.loc[key, "ARI_ci_high"] + 1e-9
    assert table.loc["kmeans", "ARI"] == 1.0
    assert table.loc["kmeans", "silhouette"] == pytest.approx(skm.silhouette_score(
        a.X, a.obs["kmeans"].astype(str), metric="cosine"))
    assert abs(table.loc["chance", "ARI"]) < 0.1 and table.loc["kmeans", "ARI_chance"] < 0.1
    assert "evaluate" in a.uns and a.uns["evaluate"]["table"].equals(table)


def test_one_class_chance_row_is_zero_not_one():
    """One label class: permuting it changes nothing, and scikit-learn would score that as perfect (1.0)."""
    a = labelled()
    a.obs["one"] = "kinase"
    a.obs["one_cluster"] = pd.Categorical(["0"] * a.n_obs)
    table = tl.evaluate(a, "one", cluster_keys=["kmeans", "one_cluster"], n_boot=10)
    assert skm.adjusted_rand_score(a.obs["one"], a.obs["one"]) == 1.0  # what the chance row used to show
    for row in ("chance", "one_cluster", "kmeans"):
        assert table.loc[row, "ARI"] == 0 and table.loc[row, "NMI"] == 0 and table.loc[row, "AMI"] == 0
    assert table.loc["chance", "n_clusters"] == 1


def test_finds_clusterings_by_itself_and_intrinsic_only_without_labels():
    a = labelled()
    table = tl.evaluate(a, None)
    assert list(table.index) == ["kmeans"]  # "rand" has no tl.cluster provenance
    assert {"silhouette", "calinski_harabasz", "davies_bouldin"} <= set(table.columns)
    assert "ARI" not in table.columns


def test_missing_and_singleton_labels_warn_and_are_left_out():
    a = labelled()
    a.obs["truth"] = a.obs["truth"].astype(object)
    a.obs.iloc[:5, a.obs.columns.get_loc("truth")] = np.nan
    a.obs.iloc[5, a.obs.columns.get_loc("truth")] = "lonely"
    with pytest.warns(UserWarning, match="5 of 60 sequences have no 'truth' label"):
        with pytest.warns(UserWarning, match="single member.*lonely"):
            table = tl.evaluate(a, "truth", cluster_keys=["kmeans"], n_boot=0)
    keep = a.obs["truth"].notna()
    assert table.loc["kmeans", "ARI"] == pytest.approx(
        skm.adjusted_rand_score(a.obs["truth"][keep], a.obs["kmeans"][keep]))
    assert a.uns["evaluate"]["n_evaluated"] == 55


def test_bad_keys():
    a = labelled()
    with pytest.raises(InputError, match="no label column 'family'"):
        tl.evaluate(a, "family")
    with pytest.raises(InputError, match="nope"):
        tl.evaluate(a, "truth", cluster_keys=["nope"])


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_writes_obsm_reproducibly(method):
    a = labelled()
    params = {"n_iter": 100, "perplexity": 10} if method == "tsne" else {}
    tl.project(a, method, **params)
    first = a.obsm[f"X_{method}"].copy()
    tl.project(a, method, **params)
    assert first.shape == (60, 2)
    assert np.allclose(first, a.obsm[f"X_{method}"])
    assert a.uns[method]["params"]["random_state"] == 0


def test_tsne_on_the_knn_graph_needs_no_second_search_and_separates_groups(monkeypatch):
    """affinities="graph" reuses tl.neighbors; "auto" switches to it by size and records the choice."""
    import openTSNE.affinity

    from protlens.tl import _reduce

    a = labelled()
    with pytest.raises(InputError, match="run protlens.tl.neighbors first"):
        tl.project(a, "tsne", affinities="graph")
    tl.neighbors(a, n_neighbors=10)
    P = _reduce.graph_affinities(a.obsp["distances"])
    assert P.sum() == pytest.approx(1.0) and abs(P - P.T).max() == 0
    assert (P.getnnz(axis=1) >= 10).all()  # every point keeps its own 10 neighbours

    def no_search(*args, **kwargs):
        raise AssertionError("openTSNE ran its own neighbour search")

    monkeypatch.setattr(openTSNE.affinity, "PerplexityBasedNN", no_search)
    tl.project(a, "tsne", affinities="graph", n_iter=250)
    assert a.uns["tsne"]["params"]["affinities"].startswith("uniform on kNN graph")
    Y, y = a.obsm["X_tsne"], a.obs["truth"].to_numpy()
    d = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.95  # nearest neighbour on the map shares the group
    monkeypatch.undo()
    monkeypatch.setattr(_reduce, "TSNE_GRAPH_MIN_N", 61)  # 60 points: below it, auto keeps perplexity
    tl.project(a, "tsne", n_iter=100, perplexity=10)
    assert a.uns["tsne"]["params"]["affinities"] == "perplexity"
    monkeypatch.setattr(_reduce, "TSNE_GRAPH_MIN_N", 60)
    monkeypatch.setattr(openTSNE.affinity, "PerplexityBasedNN", no_search)
    tl.project(a, "tsne", n_iter=100)
    assert a.uns["tsne"]["params"]["affinities"].startswith("uniform on kNN graph")
    with pytest.raises(InputError, match="unknown affinities"):
        tl.project(a, "tsne", affinities="annoy")


@pytest.mark.slow
def test_project_umap():
    a = labelled()
    tl.project(a, "umap")
    assert a.obsm["X_umap"].shape == (60, 2) and np.isfinite(a.obsm["X_umap"]).all()


def test_interval_contains_estimate_where_the_plain_bootstrap_misses_it():
    """40 classes of 8, half the labels scrambled: duplicates from resampling inflate bootstrap ARI."""
    from sklearn.metrics import adjusted_rand_score as ari

    from protlens.tl._evaluate import _half_sample_interval

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(40), 8)
    c = y.copy()
    flip = rng.random(len(y)) < 0.5
    c[flip] = rng.integers(0, 40, flip.sum())
    est = ari(y, c)
    boot = rng.integers(0, len(y), (200, len(y)))
    plain_lo, _ = np.percentile([ari(y[b], c[b]) for b in boot], [2.5, 97.5])
    assert plain_lo > est  # the plain percentile bootstrap excludes its own point estimate
    halves = np.array([rng.choice(len(y), len(y) // 2, replace=False) for _ in range(200)])
    lo, hi = _half_sample_interval(y, c, ari, est, halves)
    assert lo < est < hi
    assert 0.05 < hi - lo < 0.3  # same order as the spread over fresh draws of this process (~0.12)
