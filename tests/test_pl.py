"""Figures: class styles stay distinct at 40 classes, clusters take their matched class's style,
files are written in every format, the interactive scatter hovers id/labels/cluster."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from protlens import pl
from protlens.errors import InputError


def _adata(n_classes: int = 40, per_class: int = 3, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"fam{i}" for i in range(n_classes)], per_class)
    centres = rng.normal(scale=20, size=(n_classes, 2))
    xy = centres[np.repeat(np.arange(n_classes), per_class)] + rng.normal(size=(len(labels), 2))
    # a clustering with permuted ids: cluster (i + 7) mod n holds class i
    clusters = np.repeat([str((i + 7) % n_classes) for i in range(n_classes)], per_class)
    obs = pd.DataFrame({"family": labels, "kmeans": pd.Categorical(clusters)},
                       index=[f"seq{i}" for i in range(len(labels))])
    a = ad.AnnData(np.zeros((len(labels), 0), dtype=np.float32), obs=obs)
    a.obsm["X_tsne"] = xy
    return a


def test_forty_classes_get_forty_distinct_styles():
    styles = pl.category_styles([f"fam{i}" for i in range(40)] * 2)
    assert len(styles) == 40
    assert len(set(styles.values())) == 40
    assert len({c for c, _ in styles.values()}) == 40  # colour alone already tells them apart
    assert len({m for _, m in styles.values()}) > 1  # and markers add a second cue


def test_clusters_take_the_style_of_the_class_they_match():
    a = _adata(n_classes=5)
    ref = pl.category_styles(a.obs["family"])
    clu = pl.aligned_styles(a.obs["family"].to_numpy(), a.obs["kmeans"].to_numpy())
    for i in range(5):
        assert clu[str((i + 7) % 5)] == ref[f"fam{i}"]


def test_extra_clusters_get_unused_styles():
    labels = ["a"] * 4 + ["b"] * 4
    clusters = ["0", "0", "1", "1", "2", "2", "2", "2"]  # class a split in two
    styles = pl.aligned_styles(labels, clusters)
    ref = pl.category_styles(labels)
    assert styles["2"] == ref["b"]
    assert {styles["0"], styles["1"]} & {ref["a"]}  # one half keeps a's style
    assert len(set(styles.values())) == 3


def test_match_clusters_is_one_to_one():
    m = pl.match_clusters(["a", "a", "b", "b", "c"], ["1", "1", "1", "0", "0"])
    assert m == {"1": "a", "0": "b"}


def test_contingency_table_puts_matches_on_the_diagonal():
    a = _adata(n_classes=6, per_class=2)
    table = pl.contingency_table(a.obs["family"], a.obs["kmeans"])
    assert table.shape == (6, 6)
    assert (np.diag(table.to_numpy()) == 2).all()
    assert table.to_numpy().sum() == a.n_obs


def test_contingency_table_skips_unlabelled_records():
    table = pl.contingency_table(["a", None, "b", np.nan], ["0", "0", "1", "1"])
    assert table.to_numpy().sum() == 2


def test_panels_and_contingency_write_png_and_svg(tmp_path):
    a = _adata()
    fig = pl.embedding_panels(a, ["family", "kmeans"], reference="family", titles=["ground truth", "k-means"])
    paths = pl.save_figure(fig, tmp_path / "panels")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert "<svg" in svg and "fam39 (3)" in svg  # legend lists every class with its size
    assert "ground truth" in svg and "40 classes" in svg
    fig = pl.contingency(a, "family", "kmeans")
    (png,) = pl.save_figure(fig, tmp_path / "cont", formats=["png"])
    assert png.stat().st_size > 1000


def test_panels_without_reference(tmp_path):
    a = _adata(n_classes=4)
    fig = pl.embedding_panels(a, ["kmeans"])
    assert len(fig.axes) == 1
    assert "4 clusters" in fig.axes[0].get_title()


def test_missing_coordinates_and_columns_are_input_errors():
    a = _adata(n_classes=3)
    with pytest.raises(InputError, match="X_umap"):
        pl.embedding_panels(a, ["family"], basis="X_umap")
    with pytest.raises(InputError, match="no obs column 'leiden'"):
        pl.embedding_panels(a, ["family", "leiden"], reference="family")


def test_interactive_scatter_hover_and_menu(tmp_path):
    a = _adata(n_classes=4)
    a.obs["superfamily"] = ["sf" + f[-1] for f in a.obs["family"]]
    fig = pl.interactive_scatter(a, ["family", "kmeans"], reference="family", hover=["family", "superfamily", "kmeans"])
    n_family_traces = 4
    assert len(fig.data) == n_family_traces + 4
    assert [t.visible for t in fig.data] == [True] * 4 + [False] * 4
    first = fig.data[0]
    assert "%{customdata[0]}" in first.hovertemplate and "superfamily" in first.hovertemplate
    assert list(first.customdata[0]) == ["seq0", "fam0", "sf0", "3"]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["family", "kmeans"]
    assert buttons[1].args[0]["visible"] == [False] * 4 + [True] * 4
    path = pl.write_interactive(fig, tmp_path / "s.html")
    text = path.read_text()
    assert "seq0" in text and "<script src=\"http" not in text  # plotly.js inlined, works offline
    assert "protlens-plotly-gz" in text and len(text) < 2_500_000  # compressed: 4.8 MB of plotly.js in 1.9 MB


def test_set_colors_match_the_report_styles():
    a = _adata(n_classes=5)
    a.obs.loc[a.obs_names[0], "family"] = np.nan  # an unlabelled record stays missing
    pl.set_colors(a, ["family", "kmeans"], reference="family")
    assert list(a.obs["family"].cat.categories) == [f"fam{i}" for i in range(5)]
    assert a.obs["family"].isna().sum() == 1
    ref = pl.category_styles(a.obs["family"])
    assert a.uns["family_colors"] == [ref[c][0] for c in a.obs["family"].cat.categories]
    # cluster (i + 7) mod 5 holds class i, so it takes that class's colour
    for cluster, colour in zip(a.obs["kmeans"].cat.categories, a.uns["kmeans_colors"]):
        assert colour == ref[f"fam{(int(cluster) - 7) % 5}"][0]


@pytest.mark.slow
def test_scanpy_runs_on_a_protlens_result(tmp_path):
    """scanpy's neighbors / leiden / umap / embedding work on run's output and draw the report's colours."""
    import warnings

    from matplotlib.colors import to_hex

    from protlens.datasets import synthetic_families
    from protlens.io import read_h5ad
    from protlens.pipeline import run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import scanpy as sc

    fams = synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=1,
                              members_per_subfamily=6, length=60, random_state=1)
    run(fams, label_col="family", model="kmer", methods=("kmeans",), n_clusters=4, projection="tsne",
        baselines=(), n_boot=0, progress=False, formats=("png",), out=tmp_path)
    adata = read_h5ad(tmp_path / "result.h5ad")
    assert adata.var_names[:2].tolist() == ["AAA", "AAC"]  # k-mer columns are named by their k-mer
    sc.pp.neighbors(adata, n_neighbors=5, use_rep="X")
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, key_added="sc_leiden")
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and adata.obs["sc_leiden"].nunique() >= 2
    fig = sc.pl.embedding(adata, basis="tsne", color="family", show=False, return_fig=True)
    drawn = {to_hex(c) for coll in fig.axes[0].collections for c in coll.get_facecolors()}
    assert drawn == {to_hex(c) for c in adata.uns["family_colors"]}


def test_interactive_scatter_downsamples_large_inputs_keeping_colours():
    a = _adata(n_classes=10, per_class=30)
    full = pl.interactive_scatter(a, ["family"], reference="family")
    small = pl.interactive_scatter(a, ["family"], reference="family", max_points=50)
    assert sum(len(t.x) for t in small.data) == 50 and "random 50 drawn" in small.layout.title.text
    colour = {t.name.split(" ")[0]: t.marker.color for t in full.data}
    assert all(colour[t.name.split(" ")[0]] == t.marker.color for t in small.data)
