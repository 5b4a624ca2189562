"""Explanations: attribution maths on hand-made cases, faithfulness, plausibility, the AnnData step, CLI, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from protlens.errors import InputError
from protlens.explain import (SurrogateCNN, SurrogateScore, attribute, deletion_curves, enrichment, explain,
                              jaccard_top, locate_kinase_motifs, planted_motif_auroc, residue_track)
from protlens.explain.attribution import explain_surrogate, one_vs_rest, resolve_methods
from protlens.explain.compare import overlap_table, random_jaccard
from protlens.explain.faithfulness import surrogate_scorer
from protlens.explain.motifs import motif_masks, motif_summary


def planted_toy(n: int = 48, length: int = 40, dim: int = 8, seed: int = 0):
    """Gaussian residue vectors; class c carries its own fixed 4-residue pattern at a random position."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 2.0, size=(2, 4, dim)).astype(np.float32)
    X, y, masks = [], [], []
    for i in range(n):
        c = i % 2
        x = rng.normal(0, 1, size=(length, dim)).astype(np.float32)
        start = rng.integers(0, length - 4)
        x[start : start + 4] = patterns[c]
        m = np.zeros(length, bool)
        m[start : start + 4] = True
        X.append(x)
        y.append(f"c{c}")
        masks.append(m)
    return X, np.array(y), masks


@pytest.fixture(scope="module")
def fitted_toy():
    X, y, masks = planted_toy(n=32, length=30)
    sur = SurrogateCNN(channels=8, kernel_size=3, epochs=15, random_state=0).fit(X, y)
    return X, y, masks, sur


def test_one_vs_rest_hand_computed():
    z = torch.tensor([[1.0, 0.0, 0.0]])
    expected = torch.tensor([[1 - np.log(2), -np.log(np.e + 1), -np.log(np.e + 1)]], dtype=torch.float32)
    assert torch.allclose(one_vs_rest(z), expected, atol=1e-6)
    # two classes: log-odds are antisymmetric
    z2 = torch.tensor([[0.3, -0.2]])
    assert torch.allclose(one_vs_rest(z2), torch.tensor([[0.5, -0.5]]), atol=1e-6)


def test_resolve_methods_aliases_and_errors():
    assert resolve_methods(["ig", "grad", "IG", "sg"]) == ["integrated_gradients", "saliency", "smoothgrad"]
    with pytest.raises(InputError, match="unknown attribution method 'lime'"):
        resolve_methods(["lime"])


def test_residue_track_aggregates():
    a = np.array([[3.0, -4.0], [1.0, 1.0]])
    assert np.allclose(residue_track(a, "l2"), [5.0, np.sqrt(2)])
    assert np.allclose(residue_track(a, "abs_sum"), [7.0, 2.0])
    assert np.allclose(residue_track(a, "sum"), [-1.0, 2.0])
    # default: signed contribution, residues arguing against the cluster count as zero
    assert np.allclose(residue_track(a), [0.0, 2.0])
    with pytest.raises(InputError, match="unknown aggregate 'max'"):
        residue_track(a, "max")


def test_surrogate_learns_and_holds_out(fitted_toy):
    X, y, _, sur = fitted_toy
    assert sur.test_accuracy_ >= 0.9
    assert set(sur.train_index_).isdisjoint(sur.test_index_)
    assert len(sur.train_index_) + len(sur.test_index_) == len(X)
    # every class on both sides of the split
    assert set(y[sur.test_index_]) == set(y) == set(y[sur.train_index_])


def test_surrogate_same_seed_same_model():
    X, y, _ = planted_toy(n=16, length=20)
    a = SurrogateCNN(channels=8, epochs=3, random_state=1).fit(X, y)
    b = SurrogateCNN(channels=8, epochs=3, random_state=1).fit(X, y)
    assert np.array_equal(a.decision_function(X), b.decision_function(X))


def test_integrated_gradients_completeness(fitted_toy):
    X, y, _, sur = fitted_toy
    model = SurrogateScore(sur.module_)
    x = torch.from_numpy(X[0]).unsqueeze(0)
    target = int(np.searchsorted(sur.classes_, y[0]))
    attr = attribute(model, x, target, "integrated_gradients", n_steps=100)
    with torch.no_grad():
        gap = model(x)[0, target] - model(torch.zeros_like(x))[0, target]
    assert attr.shape == x.shape
    assert attr.sum().item() == pytest.approx(gap.item(), rel=0.05, abs=0.05)


def test_ensemble_explanation_is_mean_of_member_explanations(fitted_toy):
    X, y, _, sur = fitted_toy
    assert len(sur.module_.members) == 4 and len(sur.loss_curve_) == 4
    x = torch.from_numpy(X[1]).unsqueeze(0)
    t = int(np.searchsorted(sur.classes_, y[1]))
    ens = attribute(SurrogateScore(sur.module_), x, t, "integrated_gradients", n_steps=16)
    each = [attribute(SurrogateScore(m), x, t, "integrated_gradients", n_steps=16) for m in sur.module_.members]
    assert torch.allclose(ens, torch.stack(each).mean(0), atol=1e-5)
    # members differ (independent initialisations), so the average is not one of them
    assert not torch.allclose(each[0], each[1], atol=1e-3)


def test_attributions_recover_planted_positions(fitted_toy):
    X, y, masks, sur = fitted_toy
    targets = np.searchsorted(sur.classes_, y)
    tracks, maps = explain_surrogate(sur.module_, X, targets, ["saliency", "integrated_gradients"],
                                     keep_maps=[0], n_steps=16)
    assert maps["saliency"][0].shape == X[0].shape and set(maps["saliency"]) == {0}
    ig = planted_motif_auroc(tracks["integrated_gradients"], masks)
    assert ig["auroc_mean"] > 0.9
    assert ig["n_proteins"] == len(X)


def test_planted_motifs_recovered_on_synthetic_families(tiny_esm):
    """Ground truth through the real path: simulated families, tiny random ESM-2, default surrogate.

    Over synthetic seeds 0-12 this gave AUROC 0.80-0.94 (chance 0.5); 0.75 leaves room for noise.
    """
    from protlens.datasets import motif_mask, synthetic_families
    from protlens.pp import embed_sequences

    adata = synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=2,
                               members_per_subfamily=4, length=80, random_state=0)
    X = embed_sequences(tiny_esm, adata.obs["sequence"].tolist(), per_residue=True, progress=False).per_residue
    X = next(iter(X.values()))
    y = adata.obs["family"].astype(str).to_numpy()
    sur = SurrogateCNN(epochs=25, random_state=0).fit(X, y)
    assert sur.test_accuracy_ == 1.0
    tracks, _ = explain_surrogate(sur.module_, X, np.searchsorted(sur.classes_, y), ["ig"], n_steps=16)
    res = planted_motif_auroc(tracks["integrated_gradients"], motif_mask(adata))
    assert res["n_proteins"] == adata.n_obs
    assert res["auroc_mean"] > 0.75


def test_deletion_curves_rank_true_importance_above_random():
    w = np.linspace(1.0, 0.0, 20)

    def score(i, masks):  # additive model: the score is the sum of weights of kept residues
        return (~masks * w).sum(1)

    good = deletion_curves(score, [w, w], n_random=20)
    bad = deletion_curves(score, [-w, -w], n_random=20)
    assert good.top.shape == (2, 10)
    assert np.all(good.area > 0) and np.all(bad.area < 0)
    # deleting the top 5% (1 residue of 20) removes exactly weight 1.0
    assert good.top[0, 0] == pytest.approx(1.0)
    assert good.summary()["frac_proteins_above_random"] == 1.0


def test_surrogate_deletion_beats_random(fitted_toy):
    X, y, _, sur = fitted_toy
    targets = np.searchsorted(sur.classes_, y)
    tracks, _ = explain_surrogate(sur.module_, X[:12], targets[:12], ["integrated_gradients"])
    curves = deletion_curves(surrogate_scorer(SurrogateScore(sur.module_), X, targets), tracks["integrated_gradients"])
    assert curves.area.mean() > 0


def test_enrichment_detects_signal_and_not_noise():
    rng = np.random.default_rng(0)
    masks = [np.isin(np.arange(50), [10, 11, 12]) for _ in range(10)]
    peaked = [m * 5.0 + rng.random(50) for m in masks]
    noise = [rng.random(50) for _ in masks]
    hit = enrichment(peaked, masks, n_permutations=200)
    miss = enrichment(noise, masks, n_permutations=200)
    assert hit["enrichment"] > 2 and hit["p_value"] < 0.01
    assert miss["p_value"] > 0.05
    assert hit["p_value"] >= 1 / 201


def test_planted_auroc_hand_case():
    res = planted_motif_auroc([np.array([0.9, 0.1, 0.8, 0.2])], [np.array([True, False, False, False])])
    assert res["auroc_mean"] == pytest.approx(1.0)
    res = planted_motif_auroc([np.array([0.1, 0.9, 0.8, 0.2])], [np.array([True, False, False, False])])
    assert res["auroc_mean"] == pytest.approx(0.0)


def test_jaccard_top_and_overlap_table():
    a = np.arange(20, dtype=float)          # top 10% = {19, 18}
    b = a.copy()
    b[18] = -1                               # top 10% = {19, 17}
    j = jaccard_top([a, a], [a, b], 0.1)
    assert j.tolist() == [1.0, pytest.approx(1 / 3)]
    tab = overlap_table(j, ["x", "y"], other=["p", "p"])
    assert tab["n"].tolist() == [1, 1] and tab["majority_share_other"].tolist() == [1.0, 1.0]
    assert random_jaccard(0.1) == pytest.approx(0.1 / 1.9)


def _kinase_like(rng, motifs: dict[int, str], length: int = 230) -> str:
    aa = "ACEIKLMNPQRSTVWY"  # no D, G, H, F: motifs appear only where placed
    s = list(rng.choice(list(aa), size=length))
    for pos, m in motifs.items():
        s[pos : pos + len(m)] = m
    return "".join(s)


def test_locate_kinase_motifs_in_order_and_by_alignment():
    rng = np.random.default_rng(0)
    placed = {6: "GKGSFG", 26: "VAIK", 130: "HRD", 150: "DFG", 175: "APE"}
    seqs = [_kinase_like(rng, placed) for _ in range(3)]
    # a decoy DFG before the HRD must not be taken for the activation-loop one
    seqs[1] = seqs[1][:60] + "DFG" + seqs[1][63:]
    # a kinase with a degenerate DFG (DLG is relaxed; DAA is not a pattern, so only alignment finds it)
    seqs.append(seqs[0][:150] + "DAA" + seqs[0][153:])
    tab = locate_kinase_motifs(["k0", "k1", "k2", "k3"], seqs)
    starts = tab.pivot(index="id", columns="motif", values="start")
    for kid in ["k0", "k1", "k2", "k3"]:
        assert starts.loc[kid].to_dict() == {"gly_loop": 6, "VAIK": 26, "HRD": 130, "DFG": 150, "APE": 175}
    k3 = tab[(tab.id == "k3") & (tab.motif == "DFG")].iloc[0]
    assert k3["how"].startswith("aligned:") and k3["match"] == "DAA"
    assert motif_summary(tab).loc["DFG", "aligned"] == 1
    masks = motif_masks(tab, ["k0"], [len(seqs[0])])
    assert masks[0].sum() == 6 + 4 + 3 + 3 + 3


@pytest.mark.shared_data
def test_kinase_motifs_on_human_domains(shared_data):
    from protlens.io import read_sequences

    doms = read_sequences(shared_data / "kinases" / "hs_domains.fasta")
    tab = locate_kinase_motifs(list(doms.obs_names), doms.obs["sequence"].tolist())
    akt1 = tab[tab.id == "AKT1"].set_index("motif")["match"].to_dict()
    assert akt1["gly_loop"] == "GKGTFG" and akt1["DFG"] == "DFG" and akt1["APE"] == "APE"
    assert (tab["start"] >= 0).mean() > 0.9


# -- the AnnData step ------------------------------------------------------------------------------

@pytest.fixture()
def small_result(tmp_path, tiny_esm):
    """16 synthetic proteins embedded by the tiny ESM (per-residue sidecar) with two clusterings."""
    from protlens.datasets import synthetic_families
    from protlens.pp import embed

    adata = synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=1,
                               members_per_subfamily=4, length=40, random_state=0)
    embed(adata, tiny_esm, per_residue_file=tmp_path / "res.h5", progress=False)
    adata.obs["spectral"] = adata.obs["family"].astype(str)
    adata.obs["kmeans"] = adata.obs["superfamily"].astype(str)
    return adata


FAST = dict(methods=("saliency", "ig"), epochs=8, channels=8, n_steps=8, nt_samples=2, n_random=2,
            n_permutations=50)


@pytest.mark.slow
def test_explain_writes_tracks_summary_and_figures(small_result, tmp_path, tiny_esm):
    from protlens.io import read_h5ad, read_residues, write_h5ad

    adata = small_result
    explain(adata, "spectral", out=tmp_path / "ex", model=tiny_esm, compare_with="kmeans",
            proteins=[adata.obs_names[0]], **FAST)
    info = adata.uns["explain"]
    assert info["params"]["clusters"] == "spectral" and info["params"]["motifs"] == "planted"
    assert 0 <= info["surrogate"]["test_accuracy"] <= 1
    assert info["surrogate"]["reliable"] == (info["surrogate"]["test_accuracy"] >= 0.9)
    assert set(info["deletion"]) == {"surrogate", "plm"}
    assert set(info["deletion"]["surrogate"]) == {"saliency", "integrated_gradients"}
    assert "auroc_mean" in info["plausibility"]["surrogate"]["integrated_gradients"]
    assert info["overlap"]["per_protein"]["saliency"].shape == (adata.n_obs,)
    tracks = read_residues(info["tracks_file"], adata.obs_names, group="plm/integrated_gradients")
    assert [len(t) for t in tracks] == adata.obs["length"].tolist()
    assert all(np.all(np.isfinite(t)) for t in tracks)
    # one heatmap + one track per model for the chosen protein, and a consensus per model
    assert all(p.endswith(".png") for p in info["figures"].values()) and len(info["figures"]) == 6
    # survives an h5ad round trip and renders into the report
    write_h5ad(adata, tmp_path / "r.h5ad")
    back = read_h5ad(tmp_path / "r.h5ad")
    from protlens.report import explain_section_html

    html = explain_section_html(back, tmp_path)
    assert html.count("data:image/png;base64,") == len(info["figures"])
    assert "held-out accuracy" in html


@pytest.mark.slow
def test_explain_same_seed_same_tracks(small_result, tmp_path):
    from protlens.io import read_residues

    a, b = small_result, small_result.copy()
    kw = dict(FAST, methods=("ig",), end_to_end=False, figures=False)
    explain(a, "spectral", out=tmp_path / "a", **kw)
    explain(b, "spectral", out=tmp_path / "b", **kw)
    ta = read_residues(a.uns["explain"]["tracks_file"], a.obs_names, group="surrogate/integrated_gradients")
    tb = read_residues(b.uns["explain"]["tracks_file"], b.obs_names, group="surrogate/integrated_gradients")
    assert all(np.array_equal(x, y) for x, y in zip(ta, tb))


def test_explain_bad_input(small_result, tmp_path):
    adata = small_result
    with pytest.raises(InputError, match="no clustering 'leiden' in obs"):
        explain(adata, "leiden", out=tmp_path / "x", **FAST)
    lone = adata.copy()
    lone.obs["spectral"] = ["a"] * (lone.n_obs - 1) + ["b"]
    with pytest.raises(InputError, match=rf"cluster 'b' of 'spectral' has one member \('{lone.obs_names[-1]}'\)"):
        explain(lone, "spectral", out=tmp_path / "x", **FAST)
    # the sidecar lacks one protein
    extra = ad.concat([adata, adata[:1]])
    extra.obs_names = list(adata.obs_names) + ["newcomer"]
    extra.uns = dict(adata.uns)
    extra.obs["spectral"] = list(adata.obs["spectral"]) + [adata.obs["spectral"].iloc[0]]
    with pytest.raises(InputError, match="record 'newcomer': no per-residue array"):
        explain(extra, "spectral", out=tmp_path / "x", **FAST)
    # a model without per-residue states, asked for explicitly
    with pytest.raises(InputError, match="--model kmer3 has no per-residue states"):
        explain(adata, "spectral", out=tmp_path / "x", model="kmer", **FAST)


def test_explain_kmer_result_uses_the_bundled_plm(small_result, tmp_path):
    """A k-mer result has no per-residue states: one warning names the model used, and explain runs."""
    kmer = small_result.copy()
    kmer.uns["embed"] = {"model": "kmer3", "source": "kmer", "layers": [0]}
    del kmer.uns["per_residue_file"]
    with pytest.warns(UserWarning, match=r"embedded with kmer3, which has no per-residue states; explaining with "
                                         r"--model protlens-small \(pass --model to choose another\)"):
        explain(kmer, "spectral", out=tmp_path / "x", end_to_end=False, figures=False, **FAST)
    assert kmer.uns["explain"]["params"]["per_residue"].startswith("recomputed:protlens-small")


def test_explain_finds_the_model_beside_the_result(small_result, tmp_path, tiny_esm_dir):
    """A relative model path recorded in another working directory is found from the result's folder."""
    moved = small_result.copy()
    moved.uns["embed"] = dict(moved.uns["embed"], source=tiny_esm_dir.name, model="tiny-esm")
    del moved.uns["per_residue_file"]
    kw = dict(FAST, end_to_end=False, figures=False)
    with pytest.raises(InputError, match="model this result was embedded with .*cannot be found from here.*--model"):
        explain(moved, "spectral", out=tmp_path / "x", **kw)
    explain(moved, "spectral", out=tmp_path / "x", base_dir=tiny_esm_dir.parent, **kw)
    assert moved.uns["explain"]["params"]["per_residue"].startswith("recomputed:tiny")


@pytest.mark.slow
def test_cli_explain(small_result, tmp_path, tiny_esm_dir):
    from typer.testing import CliRunner

    from protlens.cli import app
    from protlens.io import read_h5ad, write_h5ad

    adata = small_result
    adata.uns["embed"] = dict(adata.uns["embed"], source=str(tiny_esm_dir))
    write_h5ad(adata, tmp_path / "r.h5ad")
    runner = CliRunner()
    res = runner.invoke(app, ["explain", str(tmp_path / "r.h5ad"), "--out", str(tmp_path / "cli"),
                              "--methods", "ig", "--epochs", "5", "--no-end-to-end",
                              "--no-figures"])
    assert res.exit_code == 0, res.output
    back = read_h5ad(tmp_path / "cli" / "r.explained.h5ad")
    assert back.uns["explain"]["params"]["methods"].tolist() == ["integrated_gradients"]
    res = runner.invoke(app, ["explain", str(tmp_path / "r.h5ad"), "--out", str(tmp_path / "cli"), "--clusters", "nope"])
    assert isinstance(res.exception, InputError) and "no clustering 'nope'" in str(res.exception)
