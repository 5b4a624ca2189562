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
    for name in ("result.h5ad", "metrics.csv", "report.html", "figures/panels.png",
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


@pytest.mark.slow
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
    with pytest.raises(InputError, match=rf"2 record\(s\) with unusable embeddings \(embedding contains NaN or "
                                         rf"infinite values\): {embedded.obs_names[3]}, {embedded.obs_names[7]}; "
                                         "pass --skip-invalid"):
        run(embedded, label_col="family", out=tmp_path, **{**FAST, "model": None})


def test_all_zero_embeddings_name_the_records(families, tmp_path):
    adata = families.copy()
    adata.obs.loc[adata.obs_names[4], "sequence"] = "NA"  # what a missing domain looks like in KinBase
    with pytest.raises(InputError, match=rf"1 record\(s\) .*all zero .*: {adata.obs_names[4]}; pass --skip-invalid"):
        run(adata, label_col="family", out=tmp_path, **FAST)
    kept = run(adata, label_col="family", out=tmp_path, skip_invalid=True, **FAST)
    assert kept.n_obs == adata.n_obs - 1 and adata.obs_names[4] not in kept.obs_names
    rejected = pd.read_csv(tmp_path / "rejected.tsv", sep="\t")
    assert rejected["id"].tolist() == [adata.obs_names[4]] and "all zero" in rejected["reason"][0]
    assert kept.uns["pipeline"]["n_rejected"] == 1
    assert "1 record(s) were set aside" in (tmp_path / "report.html").read_text()


def test_skip_invalid_sets_bad_records_aside(files, tmp_path):
    """A bad character and a repeated id: without the flag the error names it, with it both go to rejected.tsv."""
    fasta, labels = files
    text = fasta.read_text().splitlines()
    text[1] = text[1][:5] + "J" + text[1][6:]  # first record: invalid character
    fasta.write_text("\n".join(text) + "\n")
    first, second = text[0][1:], text[2][1:]
    with pytest.raises(InputError, match=rf"record '{first}': invalid character 'J' .*pass --skip-invalid"):
        run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)
    text += text[2:4]  # second record again: duplicate id
    fasta.write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=rf"duplicate id\(s\): {second}; pass --skip-invalid"):
        run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)
    adata = run(fasta, labels=labels, label_col="family", out=tmp_path, skip_invalid=True, **FAST)
    rejected = pd.read_csv(tmp_path / "rejected.tsv", sep="\t")
    assert rejected["id"].tolist() == [first, second]
    assert "invalid character 'J' at position 6" in rejected["reason"][0] and "duplicate" in rejected["reason"][1]
    assert adata.n_obs == 19 and first not in adata.obs_names


def test_id_column_is_detected_by_its_values(files, tmp_path):
    """The id column is found by which column holds the sequence ids, whatever its name; ambiguity names --id-col."""
    fasta, labels = files
    table = pd.read_csv(labels)
    table = table.rename(columns={"id": "Manning_Name"})
    table["gene"] = table["Manning_Name"].where(table.index % 4 == 0, "other")  # shares a few ids only
    table = table[["gene", "family", "Manning_Name", "superfamily"]]
    table.to_csv(labels, index=False)
    adata = run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)
    assert adata.obs["family"].notna().all()
    table["copy"] = table["Manning_Name"]
    table.to_csv(labels, index=False)
    with pytest.raises(InputError, match=r"several columns match .*'Manning_Name' \(20\), 'copy' \(20\).*--id-col"):
        run(fasta, labels=labels, label_col="family", out=tmp_path, **FAST)
    adata = run(fasta, labels=labels, label_col="family", id_col="copy", out=tmp_path, **FAST)
    assert adata.obs["family"].notna().all()


@pytest.mark.shared_data
def test_shipped_kinome_table_needs_no_id_col(shared_data, tmp_path):
    from protlens.io import join_labels, read_sequences

    adata = read_sequences(shared_data / "kinases" / "hs_domains.fasta")
    join_labels(adata, shared_data / "kinases" / "hs_kinome.csv", columns=["Kinase_Family"])
    assert adata.obs["Kinase_Family"].notna().mean() > 0.95


@pytest.mark.slow
def test_auto_k_and_k_at_classes_are_both_scored(families, tmp_path):
    """With labels and automatic k each method gives two rows, named; a far-off automatic k is flagged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adata = run(families, label_col="family", out=tmp_path,
                    **{**FAST, "n_clusters": None, "methods": ("kmeans", "leiden")})
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    model = metrics[metrics["kind"] == "model"].set_index("method")
    assert list(model.index) == ["kmeans", "kmeans_k4", "leiden", "leiden_k4"]
    assert model.loc["kmeans_k4", "k from"] == "= number of classes" and model.loc["kmeans_k4", "n_clusters"] == 4
    assert model.loc["kmeans", "k from"].startswith("automatic (")
    info = adata.uns["kmeans"]
    assert info["n_clusters"] == model.loc["kmeans", "n_clusters"]
    assert set(info["k_by_rule"]) == {"silhouette", "stability"}
    # the k sweep is recorded: the chosen candidate's ARI equals the table's
    curves = adata.uns["pipeline"]["k_sweep"]
    chosen = curves[(curves["method"] == "kmeans") & curves["chosen"].astype(bool)]
    assert len(chosen) == 1 and np.isclose(chosen["ARI"].iloc[0], model.loc["kmeans", "ARI"])
    far = [str(w.message) for w in caught if "labelled classes" in str(w.message)]
    k_auto = [model.loc[m, "n_clusters"] for m in ("kmeans", "leiden")]
    assert len(far) == sum(k > 8 or k < 2 for k in k_auto)
    html = (tmp_path / "report.html").read_text()
    assert "k_sweep" in html or "Every k each method tried" in html
    assert "adjusted Rand index" in html and 'class="best"' in html
    assert "Time per step" in html and adata.uns["pipeline"]["seconds_by_step"]["cluster"] > 0


def test_far_auto_k_is_flagged():
    from protlens.pipeline import far_from_classes

    metrics = pd.DataFrame({"method": ["spectral", "spectral_k40", "kmeans"], "embedder": ["m"] * 3,
                            "k from": ["automatic (eigengap)", "= number of classes", "automatic (silhouette)"],
                            "n_clusters": [2, 40, 50]})
    flagged = far_from_classes(metrics, 40)
    assert flagged == ["spectral on m chose 2 clusters by eigengap for 40 labelled classes"]


def test_skipped_baseline_is_named_not_listed_as_used(families, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="mmseqs baseline skipped"):
        adata = run(families, label_col="family", out=tmp_path, **{**FAST, "baselines": ("mmseqs",)})
    assert list(adata.uns["pipeline"]["params"]["baselines"]) == []
    assert "not installed" in adata.uns["pipeline"]["baselines_skipped"]["mmseqs"]
    assert "Baselines not run: <b>mmseqs</b>" in (tmp_path / "report.html").read_text()


def test_identical_sequences_say_what_to_do(families, tmp_path):
    same = ad.AnnData(obs=pd.DataFrame({"sequence": [families.obs["sequence"].iloc[0]] * 6},
                                       index=[f"s{i}" for i in range(6)]))
    with pytest.raises(InputError, match="same embedding .*remove duplicates"):
        run(same, out=tmp_path, **FAST)


def test_one_failing_method_keeps_the_others(families, tmp_path):
    """HDBSCAN with its default minimum cluster size cannot run on 3 points; k-means and Leiden still report
    (automatic k on 3 points: half-sample stability is undefined, so the next rule decides)."""
    tiny = families[:3].copy()
    with pytest.warns(UserWarning, match="hdbscan failed"):
        adata = run(tiny, out=tmp_path, **{**FAST, "n_clusters": None, "methods": ("kmeans", "leiden", "hdbscan")})
    assert adata.obs["kmeans"].nunique() == 2 and adata.uns["kmeans"]["selection"] == "silhouette"
    assert "leiden" in adata.obs and "hdbscan" in adata.uns["pipeline"]["failed"]
    assert "hdbscan" in (tmp_path / "report.html").read_text()


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
        with pytest.raises(InputError, match="no column's values match the sequence ids.*--id-col"):
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


@pytest.mark.slow
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
    assert set(model["method"]) == {"kmeans", "spectral", "leiden", "kmeans_k9", "spectral_k9", "leiden_k9"}
    assert "alignment" in set(metrics["embedder"])
    # families of the simulation are far more alike within than between: far above chance
    assert model["ARI"].max() > 0.5
    assert adata.uns["pipeline"]["params"]["label_col"] == "family"
