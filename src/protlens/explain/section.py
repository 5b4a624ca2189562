"""The explanations section of the pipeline's HTML report (figures inline as base64 PNG)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from .api import RELIABLE_ACCURACY


def _table(rows: list[dict]) -> str:
    from ..report import metrics_html

    return metrics_html(pd.DataFrame(rows), row_kind="kind") if rows else ""


def explain_report_section(adata, out_dir: str | Path, key: str = K.EXPLAIN) -> str:
    """HTML fragment: surrogate reliability, faithfulness, plausibility, k-means/spectral overlap, figures.

    Figures recorded by :func:`protlens.explain.explain` are inlined; missing ones are redrawn from the
    tracks file into ``out_dir/explain_figures``.
    """
    from ..report import figure_html
    from .plots import write_figures

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
    parts.append(_table([
        {"model": "surrogate CNN", "train accuracy": sur["train_accuracy"], "held-out accuracy": acc,
         "n train": int(sur["n_train"]), "n held out": int(sur["n_test"]), "kind": ""},
        {"model": "majority cluster (chance)", "train accuracy": np.nan, "held-out accuracy": sur["chance_accuracy"],
         "n train": np.nan, "n held out": np.nan, "kind": "chance"},
    ]))
    parts.append('<p class="note">Faithfulness: deleting the top-k% residues (k = 5..50) vs as many random ones; '
                 "drops are in the assigned cluster's log-odds; the area between the curves is the mean gap "
                 "(positive = the explanation finds residues the model depends on).</p>")
    parts.append(_table([{"model": src, "method": m, "area between curves": v["area_between_curves"],
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
        parts.append(_table([{"model": src, "method": m, **{c: v[c] for c in cols if c in v}, "kind": ""}
                             for src, by in plaus.items() for m, v in by.items()]))
    if "motifs_found" in info:
        found = pd.DataFrame({k: np.asarray(v) for k, v in info["motifs_found"].items()})
        parts.append('<p class="note">How the kinase motifs were located (strict pattern, relaxed pattern, '
                     "alignment to a strictly annotated domain, not found):</p>" + _table(found.to_dict("records")))
    if "overlap" in info:
        ov = info["overlap"]
        parts.append(f'<p class="note">Same protein, two clusterings: Jaccard overlap of the top '
                     f"{float(ov['top_fraction']):.0%} residues of the explanations of its <code>{html.escape(str(p['clusters']))}"
                     f"</code> and <code>{html.escape(str(ov['with']))}</code> assignments (random sets: "
                     f"{float(ov['random_jaccard']):.3f}); the second surrogate's held-out accuracy is "
                     f"{float(ov['test_accuracy_other']):.1%}.</p>")
        parts.append(_table([{"method": m, "mean Jaccard": v, "kind": ""} for m, v in ov["jaccard_mean"].items()]))
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
