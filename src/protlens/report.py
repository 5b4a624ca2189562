"""One self-contained HTML report: figures inline, metrics next to chance and baselines, parameters, versions.

Everything the page shows is inside the file (PNG figures as data URIs, plotly.js inlined), so it
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
             "umap-learn", "leidenalg", "igraph", "faiss-cpu", "parasail", "matplotlib", "plotly")

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
"""


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


def figure_html(caption: str, png: str | Path, alternatives: Sequence[str | Path] = ()) -> str:
    """A ``<figure>`` with the PNG inlined; other formats (SVG) are named as files beside the report."""
    png = Path(png)
    also = ", ".join(f"<code>{html.escape(Path(p).name)}</code>" for p in alternatives)
    extra = f" (also as {also})" if also else ""
    return f"<figure>{_img(png)}<figcaption>{html.escape(caption)}{extra}</figcaption></figure>"


def _fmt(value) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def metrics_html(metrics: pd.DataFrame, row_kind: str | None = "kind") -> str:
    """The metrics table; rows whose ``row_kind`` column says ``chance`` or ``baseline`` are styled apart."""
    cols = [c for c in metrics.columns if c != row_kind]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = []
    for _, r in metrics.iterrows():
        kind = str(r.get(row_kind, "")) if row_kind else ""
        cls = f' class="{html.escape(kind)}"' if kind in {"chance", "baseline", "published"} else ""
        cells = "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols)
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "</div>")


def compact_metrics(metrics: pd.DataFrame, keep: Sequence[str] = ("kind", "embedder", "method", "n_clusters", "ARI",
                    "NMI", "NMI_chance", "AMI", "v_measure", "silhouette")) -> pd.DataFrame:
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


def explain_section(adata, out_dir: Path) -> tuple[str, str] | None:
    """The explanations section, only when an explain step has run on this AnnData."""
    if K.EXPLAIN not in adata.uns:
        return None
    from .explain import explain_report_section

    return "Explanations", explain_report_section(adata, out_dir)


def write_report(adata, path: str | Path, metrics: pd.DataFrame | None = None,
                 figures: Sequence[tuple[str, str | Path, Sequence[str | Path]]] = (),
                 interactive: str | None = None, sections: Sequence[tuple[str, str]] = (),
                 title: str = "protlens report", summary: str = "") -> Path:
    """Write one self-contained HTML page and return its path.

    ``figures`` are ``(caption, png, other_formats)``; ``interactive`` is an HTML fragment (a plotly
    div with its JS inlined); ``sections`` are extra ``(heading, html)`` blocks appended in order
    (trusted HTML from protlens' own steps). An explanations section is added when
    ``adata.uns['explain']`` exists.
    """
    path = Path(path)
    found = versions()
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">{adata.n_obs} sequences; generated {_dt.datetime.now().isoformat(timespec="seconds")}'
             f" by protlens {html.escape(found.get('protlens', '?'))}.</p>"]
    if summary:
        parts.append(f"<p>{summary}</p>")
    if metrics is not None and len(metrics):
        parts += ["<h2>Agreement with the labels</h2>",
                  '<p class="note">Lead with ARI: it is 0 for a random partition whatever the number of clusters, '
                  "while NMI grows with it (read NMI against the chance row, labels permuted). Baseline rows "
                  "use the same clustering on a sequence method instead of the model.</p>",
                  metrics_html(metrics)]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += ['<div class="figs">'] + [figure_html(cap, png, alt) for cap, png, alt in figures] + ["</div>"]
    if interactive:
        parts += ["<h2>Interactive map</h2>",
                  '<p class="note">Hover a point for its id, labels and clusters; the menu switches the colouring; '
                  "click legend entries to hide groups.</p>", interactive]
    extra = list(sections)
    explained = explain_section(adata, path.parent)
    if explained is not None:
        extra.append(explained)
    for heading, body in extra:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    parts += ["<h2>Parameters</h2>", parameters_html(adata), "<h2>Versions</h2>", versions_html(found)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
