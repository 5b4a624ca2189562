"""The HTML report: self-contained (no external resources), figures inlined, chance and baseline rows
styled apart, parameters and versions listed, extra sections and the explain section included."""

from __future__ import annotations

import base64
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from protlens import report


def _adata(n: int = 6) -> ad.AnnData:
    a = ad.AnnData(np.zeros((n, 0), dtype=np.float32), obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]))
    a.uns["embed"] = {"model": "kmer3", "pooling": "kmer-profile"}
    a.uns["spectral"] = {"params": {"method": "spectral", "n_clusters": 3, "random_state": 0}, "n_clusters": 3}
    a.uns["not_a_step"] = "plain string"
    return a


def _png(tmp_path):
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    path = tmp_path / "fig.png"
    fig.savefig(path)
    return path


def _metrics() -> pd.DataFrame:
    return pd.DataFrame({
        "kind": ["model", "baseline", "chance"], "embedder": ["kmer3", "alignment", "labels permuted"],
        "method": ["spectral", "spectral", "chance"], "ARI": [0.8123456, 0.9, 0.0012], "NMI": [0.9, 0.95, np.nan]})


def test_report_is_self_contained_with_inline_figures(tmp_path):
    png = _png(tmp_path)
    path = report.write_report(_adata(), tmp_path / "r.html", metrics=_metrics(),
                               figures=[("a caption", png, [tmp_path / "fig.svg"])], title="T <x>")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>T &lt;x&gt;</title>" in text
    src = re.search(r'<img src="data:image/png;base64,([^"]+)"', text).group(1)
    assert base64.b64decode(src) == png.read_bytes()
    assert "a caption" in text and "fig.svg" in text
    # nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text


def test_metrics_rows_are_formatted_and_styled(tmp_path):
    text = report.write_report(_adata(), tmp_path / "r.html", metrics=_metrics()).read_text()
    assert "<td>0.812</td>" in text  # three decimals
    assert '<tr class="chance">' in text and '<tr class="baseline">' in text
    assert "<th>kind</th>" not in text  # the styling column is not shown
    chance_row = re.search(r'<tr class="chance">(.*?)</tr>', text).group(1)
    assert "<td></td>" in chance_row  # NaN shown as empty, not "nan"


def test_parameters_and_versions_are_listed(tmp_path):
    text = report.write_report(_adata(), tmp_path / "r.html").read_text()
    params = text.split("<h2>Parameters</h2>")[1].split("<h2>Versions</h2>")[0]
    assert "<td>spectral</td><td>n_clusters</td><td>3</td>" in params
    assert "<td>embed</td><td>model</td><td>kmer3</td>" in params
    assert "not_a_step" not in params
    versions = text.split("<h2>Versions</h2>")[1]
    for pkg in ("protlens", "numpy", "scikit-learn", "python"):
        assert f"<td>{pkg}</td>" in versions


def test_extra_sections_and_interactive_fragment(tmp_path):
    text = report.write_report(_adata(), tmp_path / "r.html", sections=[("My section", "<p id='mine'>hi</p>")],
                               interactive="<div id='plotly-here'></div>").read_text()
    assert "<h2>My section</h2>\n<p id='mine'>hi</p>" in text
    assert "<div id='plotly-here'></div>" in text
    assert "Explanations" not in text


def test_explain_section_only_when_explained(tmp_path, monkeypatch):
    calls = []

    def fake_section(adata, out_dir):
        calls.append(out_dir)
        return "<p>saliency here</p>"

    monkeypatch.setattr(report, "explain_section_html", fake_section)
    a = _adata()
    text = report.write_report(a, tmp_path / "plain.html").read_text()
    assert "saliency here" not in text and calls == []
    a.uns["explain"] = {"params": {"clusters": "spectral"}}
    text = report.write_report(a, tmp_path / "sub" / "r.html").read_text()
    assert "<h2>Explanations</h2>\n<p>saliency here</p>" in text
    assert calls == [tmp_path / "sub"]


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    with pytest.raises(FileNotFoundError):
        report.write_report(_adata(), path, figures=[("x", tmp_path / "missing.png", [])])
    assert path.read_text() == "old"


def test_compact_metrics_folds_intervals():
    full = pd.DataFrame({"kind": ["model"], "method": ["spectral"], "ARI": [0.8], "ARI_ci_low": [0.7123],
                         "ARI_ci_high": [0.9], "homogeneity": [0.5]})
    compact = report.compact_metrics(full)
    assert list(compact.columns) == ["kind", "method", "ARI", "ARI 95% CI"]
    assert compact.loc[0, "ARI 95% CI"] == "0.71-0.90"
