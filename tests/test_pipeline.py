"""protlens run / demo: the files it writes, labels optional, baselines and chance next to the model,
same seed -> same clusters, and every bad input a clear InputError or warning (exit code 2 in the CLI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from protlens.errors import InputError
from protlens.io import read_h5ad
from protlens.pipeline import run

FAST = dict(model="kmer", methods=("kmeans", "spectral"), n_clusters=4, projection="pca", baselines=(), n_boot=10,
            progress=False, formats=("png",))


@pytest.fixture(scope="module")
def families() -> ad.AnnData:
    from protlens.datasets import synthetic_families

    return synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=1,
                              members_per_subfamily=5, length=60, random_state=0)


@pytest.fixture()
def files(families, tmp_path):
    fasta = tmp_path / "seqs.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s in zip(families.obs_names, families.obs["sequence"])))
    labels = tmp_path / "labels.csv"
    families.obs[["family", "superfamily"]].rename_axis("id").to_csv(labels)
    return fasta, labels


def test_run_from_files_writes_everything(files, tmp_path):
    fasta, labels = files
    out = tmp_path / "out"
    adata = run(fasta, labels=labels, label_col="family", out=out, **FAST)
    for name in ("result.h5ad", "metrics.csv", "report.html", "scatter.html", "figures/panels.png",
                 "figures/contingency_kmeans.png", "figures/contingency_spectral.png"):
        assert (out / name).exists(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["kind"]) == ["model", "model", "chance"]
    assert list(metrics["method"][:2]) == ["kmeans", "spectral"]
    assert (metrics["embedder"][:2] == "kmer3").all()
    assert metrics["n_clusters"][:2].tolist() == [4, 4]
    assert metrics["ARI"].between(-1, 1).all() and abs(metrics["ARI"].iloc[-1]) < 0.2
    saved = read_h5ad(out / "result.h5ad")
    assert saved.n_obs == adata.n_obs == 20
    assert {"family", "superfamily", "kmeans", "spectral"} <= set(saved.obs.columns)
    assert "X_pca" in saved.obsm
    assert saved.uns["pipeline"]["params"]["label_col"] == "family"
    html = (out / "report.html").read_text()
    assert "Agreement with the labels" in html and 'class="chance"' in html
    assert html.count("<img src=\"data:image/png;base64,") == 3


def test_families_are_recovered(families, tmp_path):
    """Families of the simulation are clearly apart in 3-mer space: a working pipeline finds them."""
    adata = run(families, label_col="family", out=tmp_path, **FAST)
    metrics = adata.uns["evaluate"]["table"]
    assert metrics.loc["kmeans", "ARI"] > 0.9
    assert metrics.loc["chance", "ARI"] < 0.1


def test_run_without_labels(families, tmp_path):
    unlabeled = ad.AnnData(obs=families.obs[["sequence", "length"]].copy())
    adata = run(unlabeled, out=tmp_path, **FAST)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert "ARI" not in metrics.columns and "silhouette" in metrics.columns
    assert list(metrics["method"]) == ["kmeans", "spectral"]
    assert "kmeans" in adata.obs
    html = (tmp_path / "report.html").read_text()
    assert "no labels, so only intrinsic scores" in html


def test_baselines_are_scored_next_to_the_model(families, tmp_path):
    adata = run(families, label_col="family", out=tmp_path, **{**FAST, "baselines": ("kmer123", "alignment")})
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    rows = set(zip(metrics["embedder"], metrics["method"]))
    assert {("kmer123", "kmeans"), ("kmer123", "spectral"), ("alignment", "spectral")} <= rows
    assert ("alignment", "kmeans") not in rows  # k-means needs vectors, not a similarity
    assert (metrics["kind"] == "chance").sum() == 1 and metrics["kind"].iloc[-1] == "chance"
    assert {"kmeans_kmer123", "spectral_alignment"} <= set(adata.obs.columns)
    html = (tmp_path / "report.html").read_text()
    assert html.count('<tr class="baseline">') == 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmseqs") is None, reason="mmseqs (Debian package mmseqs2) not installed")
def test_mmseqs_reference_row(families, tmp_path):
    adata = run(families, label_col="family", out=tmp_path, **{**FAST, "baselines": ("mmseqs",)})
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("embedder")
    assert metrics.loc["mmseqs", "method"] == "mmseqs"
    assert metrics.loc["mmseqs", "n_clusters"] == adata.obs["mmseqs"].nunique()


def test_baseline_equal_to_the_model_is_not_repeated(families, tmp_path):
    run(families, label_col="family", out=tmp_path, **{**FAST, "baselines": ("kmer",)})
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert "baseline" not in set(metrics["kind"])


def test_same_seed_same_clusters(families, tmp_path):
    rng = np.random.default_rng(0)
    codes = pd.factorize(families.obs["family"])[0]
    X = (rng.normal(size=(4, 16))[codes] + 0.8 * rng.normal(size=(families.n_obs, 16))).astype(np.float32)
    embedded = ad.AnnData(X=X, obs=families.obs)
    kw = {**FAST, "model": None, "n_clusters": None, "methods": ("kmeans", "spectral", "leiden"),
          "projection": "tsne"}
    a = run(embedded, label_col="family", out=tmp_path / "a", random_state=3, **kw)
    b = run(embedded, label_col="family", out=tmp_path / "b", random_state=3, **kw)
    for key in ("kmeans", "spectral", "leiden"):
        assert (a.obs[key].astype(str) == b.obs[key].astype(str)).all()
    np.testing.assert_array_equal(a.obsm["X_tsne"], b.obsm["X_tsne"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "b" / "metrics.csv"))


def test_n_clusters_from_labels(families, tmp_path):
    adata = run(families, label_col="family", out=tmp_path, **{**FAST, "n_clusters": "labels"})
    assert adata.obs["kmeans"].nunique() == 4


# ---- bad input -------------------------------------------------------------------------------


def test_fewer_than_three_sequences(families, tmp_path):
    with pytest.raises(InputError, match="at least 3"):
        run(families[:2].copy(), label_col="family", out=tmp_path, **FAST)


def test_k_larger_than_n(families, tmp_path):
    with pytest.raises(InputError, match="n_clusters = 50 is not possible with 20 sequences"):
        run(families, label_col="family", out=tmp_path, **{**FAST, "n_clusters": 50})


def test_nan_embeddings_name_the_records(families, tmp_path):
    adata = families.copy()
    X = np.random.default_rng(0).normal(size=(adata.n_obs, 8)).astype(np.float32)
    X[3, 2] = np.nan
    X[7, 0] = np.inf
    embedded = ad.AnnData(X=X, obs=adata.obs)
    with pytest.raises(InputError, match=rf"2 embedding\(s\) contain NaN or infinite values: "
                                         rf"{embedded.obs_names[3]}, {embedded.obs_names[7]}"):
        run(embedded, label_col="family", out=tmp_path, **{**FAST, "model": None})


def test_all_zero_embeddings_name_the_records(families, tmp_path):
    adata = families.copy()
    adata.obs.loc[adata.obs_names[4], "sequence"] = "NA"  # what a missing domain looks like in KinBase
    with pytest.raises(InputError, match=rf"1 embedding\(s\) are all zero .*: {adata.obs_names[4]}"):
        run(adata, label_col="family", out=tmp_path, **FAST)


def test_precomputed_embeddings_are_used(families, tmp_path):
    X = np.random.default_rng(0).normal(size=(families.n_obs, 8)).astype(np.float32)
    adata = run(ad.AnnData(X=X, obs=families.obs), label_col="family", out=tmp_path, **{**FAST, "model": None})
    assert adata.n_vars == 8 and adata.uns["pipeline"]["params"]["model"] == "precomputed"


def test_missing_and_singleton_labels_warn(files, tmp_path):
    fasta, labels = files
    table = pd.read_csv(labels)
    table = table.iloc[2:].copy()  # two sequences without a label row
    table.loc[table.index[0], "family"] = "lonely"  # a class with one member
    table.to_csv(labels, index=False)
    with pytest.warns(UserWarning) as record:
        adata = run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)
    messages = " | ".join(str(w.message) for w in record)
    assert "2 sequences without a label row" in messages
    assert "single member" in messages and "lonely" in messages
    assert adata.uns["evaluate"]["n_evaluated"] == 18
    assert adata.obs["kmeans"].notna().all()  # unlabelled records are still clustered


def test_no_matching_labels_is_an_error(files, tmp_path):
    fasta, labels = files
    pd.DataFrame({"id": ["x", "y", "z"], "family": ["a", "b", "c"]}).to_csv(labels, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="no sequence has a label"):
            run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)


def test_label_column_must_be_chosen_when_ambiguous(files, tmp_path):
    fasta, labels = files
    with pytest.raises(InputError, match="several label columns .*--label-col"):
        run(fasta, labels=labels, out=tmp_path, **FAST)
    with pytest.raises(InputError, match="no label column 'clade'"):
        run(fasta, labels=labels, label_col="clade", out=tmp_path, **FAST)


@pytest.mark.parametrize("kw, match", [
    ({"methods": ("kmeans", "dbscan")}, "unknown clustering method"),
    ({"projection": "mds"}, "unknown projection"),
    ({"baselines": ("blast",)}, "unknown baseline"),
    ({"n_clusters": "many"}, "n_clusters must be a number"),
])
def test_bad_options(families, tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        run(families, label_col="family", out=tmp_path, **{**FAST, **kw})


# ---- CLI -------------------------------------------------------------------------------------


def _cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    from protlens.cli import main

    monkeypatch.setattr(sys, "argv", ["protlens", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_run(files, tmp_path, monkeypatch, capsys):
    fasta, labels = files
    out = tmp_path / "cli"
    code, stdout, _ = _cli(["run", str(fasta), "--labels", str(labels), "--label-col", "family", "--model", "kmer",
                            "--methods", "kmeans,spectral", "--n-clusters", "4", "--projection", "pca",
                            "--baselines", "none", "--n-boot", "10", "--no-progress", "--out", str(out)],
                           monkeypatch, capsys)
    assert code == 0, stdout
    assert "report.html" in stdout
    assert set(pd.read_csv(out / "metrics.csv")["method"]) == {"kmeans", "spectral", "chance"}


@pytest.mark.parametrize("args, message", [
    (["run", "missing.fasta"], "missing.fasta: file not found"),
    (["run", "{fasta}", "--n-clusters", "100", "--model", "kmer"], "n_clusters = 100 is not possible"),
    (["run", "{fasta}", "--methods", "kmeans,magic"], "unknown clustering method(s) magic"),
    (["run", "{fasta}", "--n-clusters", "lots"], "--n-clusters 'lots'"),
])
def test_cli_bad_input_is_one_line_exit_2(files, tmp_path, monkeypatch, capsys, args, message):
    fasta, _ = files
    args = [a.format(fasta=fasta) for a in args] + ["--out", str(tmp_path / "o"), "--no-progress"]
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protlens: error:") and message in lines[0], err
    assert "Traceback" not in err


def test_cli_subprocess_exit_code(tmp_path):
    """The installed entry point itself: exit status 2, one line, no traceback."""
    bad = tmp_path / "two.fasta"
    bad.write_text(">a\nMKV\n>b\nMKL\n")
    proc = subprocess.run([sys.executable, "-m", "protlens", "run", str(bad), "--model", "kmer",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "protlens: error: 2 sequence(s): clustering needs at least 3"


@pytest.mark.slow
def test_demo(tmp_path):
    from protlens.pipeline import demo

    adata = demo(out=tmp_path, progress=False)
    for name in ("report.html", "metrics.csv", "result.h5ad", "figures/panels.svg", "demo_sequences.fasta",
                 "demo_labels.csv"):
        assert (tmp_path / name).exists(), name
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    model = metrics[metrics["kind"] == "model"]
    assert set(model["method"]) == {"kmeans", "spectral", "leiden"}
    assert "alignment" in set(metrics["embedder"])
    # families of the simulation are far more alike within than between: far above chance
    assert model["ARI"].max() > 0.5
    assert adata.uns["pipeline"]["params"]["label_col"] == "family"
