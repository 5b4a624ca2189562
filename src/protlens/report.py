"""One self-contained HTML report: figures inline, metrics next to chance and baselines, parameters, versions.

Everything the page shows is inside the file (PNG figures as data URIs, plotly.js inlined gzip-compressed), so it
can be mailed, archived or opened on an offline machine and still look the same.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import _keys as K
from .io import atomic_path

#: Packages whose versions decide the numbers in a report.
VERSIONED = ("protlens", "numpy", "scipy", "scikit-learn", "anndata", "torch", "transformers", "openTSNE",
             "umap-learn", "igraph", "faiss-cpu", "parasail", "matplotlib", "plotly")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}th,td{padding:.25em .6em;border-bottom:1px solid #eee;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
tr.chance td{color:#777;font-style:italic}tr.baseline td{background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.wide{overflow-x:auto}.figs{display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start}
.note{font-size:.88em;color:#555}code{background:#f3f3f3;padding:0 .2em}
td.best{font-weight:bold;background:#e3f2e1}.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5em .8em}
.scroll{overflow:auto;max-height:900px;border:1px solid #eee}.scroll img{max-width:none;border:0}
dl.terms dt{font-weight:bold;float:left;clear:left;width:7em}dl.terms dd{margin-left:7.5em;font-size:.9em}
"""

#: What the metrics table's columns mean, in the report.
METRIC_TERMS = (
    ("ARI", "adjusted Rand index: agreement of two partitions over all pairs of records, 0 for a random "
            "partition whatever the number of clusters, 1 for identical partitions. Lead with it."),
    ("NMI", "normalised mutual information: 0-1, but it grows with the number of clusters even for random "
            "partitions; read it against the chance row and the NMI_chance column."),
    ("AMI", "NMI adjusted for chance (0 for random partitions)."),
    ("silhouette", "how much closer records are to their own cluster than to the next one in the embedding "
                   "(cosine), -1 to 1; needs no labels, and says nothing about agreement with them."),
    ("k from", "how the number of clusters was set: the method's automatic choice (and by which rule: eigengap, "
               "silhouette, modularity or half-sample stability) or k = the number of labelled classes."),
)


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results (plus Python and the platform)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def figure_html(caption: str, png: str | Path, alternatives: Sequence[str | Path] = (), scroll: bool = False) -> str:
    """A ``<figure>`` with the PNG inlined; other formats (SVG) are named as files beside the report.

    ``scroll``: shown at full size in a scroll box (large heatmaps stay legible instead of shrinking).
    """
    png = Path(png)
    also = ", ".join(f"<code>{html.escape(Path(p).name)}</code>" for p in alternatives)
    extra = f" (also as {also})" if also else ""
    img = f'<div class="scroll">{_img(png)}</div>' if scroll else _img(png)
    return f"<figure>{img}<figcaption>{html.escape(caption)}{extra}</figcaption></figure>"


def _fmt(value) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def metrics_html(metrics: pd.DataFrame, row_kind: str | None = "kind", best: Sequence[str] = ()) -> str:
    """The metrics table; rows whose ``row_kind`` column says ``chance`` or ``baseline`` are styled apart.

    In each column of ``best`` the highest value among the non-chance rows is highlighted (bold, shaded).
    """
    cols = [c for c in metrics.columns if c != row_kind]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    scored = metrics[metrics[row_kind] != "chance"] if row_kind in metrics else metrics
    top = {c: scored[c].max() for c in best if c in scored and pd.api.types.is_numeric_dtype(scored[c])
           and scored[c].notna().any()}
    rows = []
    for _, r in metrics.iterrows():
        kind = str(r.get(row_kind, "")) if row_kind else ""
        cls = f' class="{html.escape(kind)}"' if kind in {"chance", "baseline", "published"} else ""
        cells = "".join(
            f'<td class="best" title="best {html.escape(c)}">{html.escape(_fmt(r[c]))}</td>'
            if c in top and kind != "chance" and r[c] == top[c] else f"<td>{html.escape(_fmt(r[c]))}</td>"
            for c in cols)
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "</div>")


def compact_metrics(metrics: pd.DataFrame, keep: Sequence[str] = ("kind", "embedder", "method", "k from", "n_clusters",
                    "ARI", "NMI", "NMI_chance", "AMI", "v_measure", "silhouette")) -> pd.DataFrame:
    """The columns a reader needs, with each half-sample interval folded into one ``lo-hi`` column."""
    out = pd.DataFrame(index=metrics.index)
    for col in keep:
        if col not in metrics:
            continue
        out[col] = metrics[col]
        lo, hi = f"{col}_ci_low", f"{col}_ci_high"
        if lo in metrics and hi in metrics:
            out[f"{col} 95% CI"] = [f"{a:.2f}-{b:.2f}" if pd.notna(a) and pd.notna(b) else ""
                                    for a, b in zip(metrics[lo], metrics[hi])]
    return out


def _plain(value):
    """uns values (numpy arrays, nested dicts) as short readable text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(_plain(v)) for v in value)
        return text if len(text) < 200 else text[:200] + " ..."
    return value


def parameters_html(adata) -> str:
    """Every step's recorded parameters: ``uns[step]['params']`` (scanpy style) and the embed provenance."""
    rows = []
    for key in sorted(adata.uns.keys()):
        entry = adata.uns[key]
        if not isinstance(entry, Mapping):
            continue
        params = entry.get("params", entry if key in (K.EMBED, "pipeline") else None)
        if not isinstance(params, Mapping):
            continue
        for name, value in params.items():
            rows.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(name))}</td>"
                        f"<td>{html.escape(str(_plain(value)))}</td></tr>")
    if not rows:
        return '<p class="note">No step parameters were recorded.</p>'
    return ("<table><thead><tr><th>step</th><th>parameter</th><th>value</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def versions_html(found: Mapping[str, str]) -> str:
    return ("<table><tbody>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                                      for k, v in found.items()) + "</tbody></table>")


def _explain_table(rows: list[dict]) -> str:
    return metrics_html(pd.DataFrame(rows), row_kind="kind") if rows else ""


def explain_section_html(adata, out_dir: str | Path, key: str = K.EXPLAIN) -> str:
    """HTML fragment: surrogate reliability, faithfulness, plausibility, k-means/spectral overlap, figures.

    Figures recorded by :func:`protlens.explain.explain` are inlined; missing ones are redrawn from the
    tracks file into ``out_dir/explain_figures``.
    """
    from .explain.api import RELIABLE_ACCURACY
    from .explain.plots import write_figures

    info = adata.uns[key]
    p = info["params"]
    sur = info["surrogate"]
    acc = float(sur["test_accuracy"])
    parts = [f"<p>Cluster assignments of <code>{html.escape(str(p['clusters']))}</code> explained residue by residue. "
             f"Per-residue embeddings: <code>{html.escape(str(p['per_residue']))}</code>. End-to-end attribution "
             f"through the language model: {html.escape(str(info['end_to_end']))}.</p>"]
    if acc < RELIABLE_ACCURACY:
        parts.append(f'<p style="color:#b00020"><b>Unreliable:</b> the surrogate CNN reaches {acc:.1%} held-out '
                     f"accuracy (below {RELIABLE_ACCURACY:.0%}); its explanations describe a model that does not "
                     "reproduce the clustering well.</p>")
    parts.append(_explain_table([
        {"model": "surrogate CNN", "train accuracy": sur["train_accuracy"], "held-out accuracy": acc,
         "n train": int(sur["n_train"]), "n held out": int(sur["n_test"]), "kind": ""},
        {"model": "majority cluster (chance)", "train accuracy": np.nan, "held-out accuracy": sur["chance_accuracy"],
         "n train": np.nan, "n held out": np.nan, "kind": "chance"},
    ]))
    parts.append('<p class="note">Faithfulness: deleting the top-k% residues (k = 5..50) vs as many random ones; '
                 "drops are in the assigned cluster's log-odds; the area between the curves is the mean gap "
                 "(positive = the explanation finds residues the model depends on).</p>")
    parts.append(_explain_table([{"model": src, "method": m, "area between curves": v["area_between_curves"],
                          "share of proteins > random": v["frac_proteins_above_random"],
                          "drop top 10%": v["drop_top_10pct"], "drop random 10%": v["drop_random_10pct"],
                          "drop top 50%": v["drop_top_50pct"], "drop random 50%": v["drop_random_50pct"],
                          "kind": ""} for src, by in info["deletion"].items() for m, v in by.items()]))
    plaus = info.get("plausibility", {})
    if plaus:
        parts.append(f'<p class="note">Plausibility against {html.escape(str(p["motifs"]))} motifs: mean importance '
                     "at motif residues over each protein's mean (1 = no enrichment); p-value from random circular "
                     "shifts of the motif positions.</p>")
        cols = ("enrichment", "null_mean", "p_value", "auroc_mean", "auroc_pooled")
        parts.append(_explain_table([{"model": src, "method": m, **{c: v[c] for c in cols if c in v}, "kind": ""}
                             for src, by in plaus.items() for m, v in by.items()]))
    if "motifs_found" in info:
        found = pd.DataFrame({k: np.asarray(v) for k, v in info["motifs_found"].items()})
        parts.append('<p class="note">How the kinase motifs were located (strict pattern, relaxed pattern, '
                     "alignment to a strictly annotated domain, not found):</p>" + _explain_table(found.to_dict("records")))
    if "overlap" in info:
        ov = info["overlap"]
        parts.append(f'<p class="note">Same protein, two clusterings: Jaccard overlap of the top '
                     f"{float(ov['top_fraction']):.0%} residues of the explanations of its <code>{html.escape(str(p['clusters']))}"
                     f"</code> and <code>{html.escape(str(ov['with']))}</code> assignments (random sets: "
                     f"{float(ov['random_jaccard']):.3f}); the second surrogate's held-out accuracy is "
                     f"{float(ov['test_accuracy_other']):.1%}.</p>")
        parts.append(_explain_table([{"method": m, "mean Jaccard": v, "kind": ""} for m, v in ov["jaccard_mean"].items()]))
    figs = dict(info.get("figures", {}))
    if not figs or not all(Path(f).exists() for f in figs.values()):
        figs = write_figures(adata, Path(out_dir) / "explain_figures", key=key)
    for name, path in figs.items():
        kind = name.split("_")[0]
        caption = {"heatmap": "Saliency map: sequence position x embedding dimension",
                   "track": "Per-residue importance under the sequence (top residues red, motif residues blue)",
                   "consensus": "Per-cluster consensus: mean importance of members aligned to the cluster medoid "
                                "(medoid's motif residues shaded)"}[kind]
        parts.append(figure_html(f"{caption} ({name})", path))
    return "\n".join(parts)


def timings_html(seconds: Mapping[str, float]) -> str:
    """Seconds per pipeline step, as recorded in ``uns['pipeline']['seconds_by_step']``."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{float(v):.1f} s</td></tr>" for k, v in seconds.items())
    return f"<table><thead><tr><th>step</th><th>time</th></tr></thead><tbody>{rows}</tbody></table>"


def terms_html() -> str:
    return '<dl class="terms">' + "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(d)}</dd>"
                                          for t, d in METRIC_TERMS) + "</dl>"


def write_report(adata, path: str | Path, metrics: pd.DataFrame | None = None,
                 figures: Sequence[tuple] = (), interactive: str | None = None,
                 sections: Sequence[tuple[str, str]] = (), title: str = "protlens report", summary: str = "",
                 warnings_html: Sequence[str] = (), skipped: Mapping[str, str] | None = None,
                 failed: Mapping[str, str] | None = None) -> Path:
    """Write one self-contained HTML page and return its path.

    ``figures`` are ``(caption, png, other_formats[, scroll])``; ``interactive`` is an HTML fragment (a
    plotly div with its JS inlined); ``sections`` are extra ``(heading, html)`` blocks appended in order
    (trusted HTML from protlens' own steps). ``warnings_html`` are shown prominently under the summary
    (plain text, escaped); ``skipped`` baselines and ``failed`` methods are named with their reasons.
    An explanations section is added when ``adata.uns['explain']`` exists.
    """
    path = Path(path)
    found = versions()
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">{adata.n_obs} sequences; generated {_dt.datetime.now().isoformat(timespec="seconds")}'
             f" by protlens {html.escape(found.get('protlens', '?'))}.</p>"]
    if summary:
        parts.append(f"<p>{summary}</p>")
    if warnings_html:
        parts.append('<div class="warn"><b>The automatic number of clusters is far from the number of labelled '
                     "classes</b> (read the rows at k = the number of classes to compare methods):<ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in warnings_html) + "</ul></div>")
    if metrics is not None and len(metrics):
        labelled = "ARI" in metrics
        parts += ["<h2>Agreement with the labels</h2>" if labelled else "<h2>Cluster quality (no labels)</h2>",
                  '<p class="note">Baseline rows use the same clustering on a sequence method instead of the model; '
                  "the chance row scores the labels permuted. The best value of each score is highlighted. "
                  "95% intervals come from random half-samples.</p>" if labelled else "",
                  metrics_html(metrics, best=("ARI", "NMI", "AMI", "v_measure", "silhouette")), terms_html()]
    if skipped:
        parts.append('<p class="note">Baselines not run: ' + "; ".join(
            f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in skipped.items()) + ".</p>")
    if failed:
        parts.append('<p class="warn">Clusterings that failed and are left out: ' + "; ".join(
            f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in failed.items()) + ".</p>")
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += ['<div class="figs">'] + [figure_html(cap, png, alt, *rest) for cap, png, alt, *rest in figures]
        parts.append("</div>")
    if interactive:
        parts += ["<h2>Interactive map</h2>",
                  '<p class="note">Hover a point for its id, labels and clusters; the menu switches the colouring; '
                  "click legend entries to hide groups.</p>", interactive]
    extra = list(sections)
    if K.EXPLAIN in adata.uns:
        extra.append(("Explanations", explain_section_html(adata, path.parent)))
    for heading, body in extra:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    seconds = adata.uns.get("pipeline", {}).get("seconds_by_step")
    if seconds:
        parts += ["<h2>Time per step</h2>", timings_html(seconds)]
    parts += ["<h2>Parameters</h2>", parameters_html(adata), "<h2>Versions</h2>", versions_html(found)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
