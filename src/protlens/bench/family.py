"""Family classification with a linear probe on frozen embeddings (ComproESM appendix D, section 5.3).

* ``ec3_acc``: enzymes, 3rd EC level (classes with >= 10 members), 1:1 stratified split, one fully
  connected layer (multinomial logistic regression on standardised features), test accuracy.
* ``cath_acc``: the same on CATH S40 superfamilies with >= 10 members (the shared CATH pool).
* the published 10-family experiment: the 10 most common classes (here CATH superfamilies; the
  paper used Pfam families we do not have), 50 train / 10 test each, a linear layer trained for 20
  epochs (SGD, log loss); train and test accuracy and a confusion-matrix figure.

Data: Swiss-Prot enzymes with EC numbers (``function/enzymes_ec_split10.tsv``, from CLEAN,
github.com/tttianhao/CLEAN) and CATH S40 (``cath/``, from cathdb.info, CC-BY 4.0).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix

from ._common import (BenchModel, Context, Row, cath_domains, cath_pool, enzyme_subset, head, safe_name,
                      stratified_half_split)

TASK = "family"
TEN_EPOCHS = 20
TEN_TRAIN, TEN_TEST = 50, 10


def linear_probe(x: np.ndarray, y: np.ndarray, is_train: np.ndarray, seed: int, pca_cap: int = 0) -> float:
    """Test accuracy of a softmax linear layer fitted on the training rows."""
    clf = head(LogisticRegression(C=1.0, max_iter=2000, random_state=seed), seed, pca_cap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[is_train], y[is_train])
    return float(accuracy_score(y[~is_train], clf.predict(x[~is_train])))


def _probe_split(ctx: Context, name: str, frame: pd.DataFrame, label: str) -> pd.DataFrame:
    counts = frame[label].value_counts()
    frame = frame[frame[label].isin(counts[counts >= 2].index)].reset_index(drop=True)
    is_train = stratified_half_split(frame[label].to_numpy(), ctx.rng(f"{TASK}/{name}"))
    frame = frame.assign(split=np.where(is_train, "train", "test"))
    ctx.write_split(f"{TASK}_{name}", frame[["id", label, "split"]])
    return frame


def ten_family_set(ctx: Context) -> pd.DataFrame:
    """The 10 most common CATH superfamilies, 60 domains each (seeded), split 50/10 per class."""
    df = cath_domains(ctx)
    counts = df["superfamily"].value_counts()
    top = counts.index[:10]
    rng = ctx.rng(f"{TASK}/ten")
    parts = []
    for sf in top:  # a class smaller than tenfam_per_class (training data excluded) keeps all its members
        per = min(ctx.sizes["tenfam_per_class"], int(counts[sf]))
        n_test = max(1, round(per * TEN_TEST / (TEN_TRAIN + TEN_TEST)))
        sub = df[df["superfamily"] == sf].sample(per, random_state=int(rng.integers(2**31)))
        parts.append(sub.assign(split=["train"] * (per - n_test) + ["test"] * n_test))
    out = pd.concat(parts, ignore_index=True)
    ctx.write_split(f"{TASK}_ten", out[["id", "superfamily", "split"]])
    return out


def ten_family(ctx: Context, model: BenchModel) -> list[Row]:
    data = ten_family_set(ctx)
    x = model.pooled(data["sequence"].tolist())
    y = data["superfamily"].to_numpy()
    tr = (data["split"] == "train").to_numpy()
    clf = head(SGDClassifier(loss="log_loss", max_iter=TEN_EPOCHS, tol=None, random_state=ctx.seed), ctx.seed,
               ctx.pca_cap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[tr], y[tr])
    pred = clf.predict(x[~tr])
    classes = sorted(set(y))
    _confusion_figure(confusion_matrix(y[~tr], pred, labels=classes), classes,
                      ctx.figure_path(f"{safe_name(model.name)}_tenfamily_confusion.png"), model.name)
    return [Row(TASK, "tenfam_train_acc", float(accuracy_score(y[tr], clf.predict(x[tr]))), int(tr.sum())),
            Row(TASK, "tenfam_test_acc", float(accuracy_score(y[~tr], pred)), int((~tr).sum()),
                f"{TEN_EPOCHS} epochs, 10 CATH superfamilies")]


def _confusion_figure(cm: np.ndarray, classes: list[str], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(ax=ax, xticks_rotation=90, colorbar=False)
    ax.set_title(f"{title}: 10-family test confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(ctx: Context, model: BenchModel) -> list[Row]:
    rows = []
    for name, frame, label in (("ec3", enzyme_subset(ctx), "ec3"), ("cath", cath_pool(ctx), "superfamily")):
        data = _probe_split(ctx, name, frame, label)
        if data[label].nunique() < 2:
            rows.append(Row(TASK, f"{name}_acc", float("nan"), 0, "fewer than 2 classes left after excluding "
                            "the models' training proteins"))
            continue
        x = model.pooled(data["sequence"].tolist())
        acc = linear_probe(x, data[label].to_numpy(), (data["split"] == "train").to_numpy(), ctx.seed, ctx.pca_cap)
        rows.append(Row(TASK, f"{name}_acc", acc, int((data["split"] == "test").sum()),
                        f"{data[label].nunique()} classes"))
    return rows + ten_family(ctx, model)
