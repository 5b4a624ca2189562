"""Pictures of a representation (ComproESM section 4.3, Figures 3 and 4), each with one number.

* t-SNE of the output-layer amino-acid embeddings (rows of the masked-LM decoder for the 20
  standard residues) coloured by physico-chemical class; the number is the leave-one-out
  1-nearest-neighbour accuracy of that class in the original (cosine) space, so it does not depend
  on the t-SNE layout (chance is about 0.2).
* t-SNE of protein embeddings of the 10-family set coloured by CATH superfamily; the number is
  the cosine silhouette of the superfamilies in the original space.
"""

from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from ..models import ESM_ALPHABET
from ._common import BenchModel, Context, Row, cosine_matrix, safe_name
from .family import ten_family_set

TASK = "figures"
AA_CLASSES = {
    "aliphatic": "AVLIM", "aromatic": "FWY", "polar": "STNQ", "positive": "KRH", "negative": "DE", "special": "GPC",
}
AA_CLASS = {a: c for c, aas in AA_CLASSES.items() for a in aas}


def amino_acid_embeddings(model: BenchModel) -> tuple[list[str], np.ndarray]:
    """Decoder (output-layer) vectors of the 20 standard residues."""
    weight = model.model.hf.lm_head.decoder.weight.detach().float().cpu().numpy()
    aas = sorted(AA_CLASS)
    return aas, weight[[ESM_ALPHABET.tok_to_idx[a] for a in aas]]


def loo_1nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    sim = cosine_matrix(x)
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[np.argmax(sim, axis=1)] == labels))


def _scatter(xy: np.ndarray, labels: np.ndarray, path, title: str, texts: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for k, lab in enumerate(sorted(set(labels))):
        m = labels == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=40 if texts else 10, color=plt.cm.tab10(k % 10), label=lab)
    for t, (px, py) in zip(texts or [], xy):
        ax.annotate(t, (px, py), fontsize=9, ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _iters(ctx: Context) -> int:
    return 250 if ctx.smoke else 1000  # sklearn's minimum in smoke runs; the default otherwise


def run(ctx: Context, model: BenchModel) -> list[Row]:
    rows = []
    name = safe_name(model.name)
    if model.has_logits:
        aas, w = amino_acid_embeddings(model)
        cls = np.array([AA_CLASS[a] for a in aas])
        xy = TSNE(n_components=2, perplexity=5, init="pca", max_iter=_iters(ctx),
                  random_state=ctx.seed).fit_transform(w)
        _scatter(xy, cls, ctx.figure_path(f"{name}_aa_tsne.png"), f"{model.name}: output-layer amino acids", aas)
        rows.append(Row(TASK, "aa_class_1nn_acc", loo_1nn_accuracy(w, cls), len(aas), f"figures/{name}_aa_tsne.png"))
    else:
        rows.append(Row(TASK, "aa_class_1nn_acc", float("nan"), 0, "skipped: model has no output layer"))
    data = ten_family_set(ctx)
    x = model.pooled(data["sequence"].tolist())
    labels = data["superfamily"].to_numpy()
    perplexity = min(30.0, (len(x) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", max_iter=_iters(ctx),
              random_state=ctx.seed).fit_transform(x)
    _scatter(xy, labels, ctx.figure_path(f"{name}_protein_tsne.png"), f"{model.name}: proteins by superfamily")
    rows.append(Row(TASK, "tenfam_silhouette", float(silhouette_score(x, labels, metric="cosine")), len(x),
                    f"figures/{name}_protein_tsne.png"))
    return rows
