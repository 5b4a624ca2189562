"""Activity prediction (ComproESM appendix F): regress TEM-1 beta-lactamase variant fitness on frozen embeddings.

Each variant sequence (wild type with its substitution applied) is embedded; ridge regression and
a one-hidden-layer MLP are scored by 5-fold cross-validation on out-of-fold predictions: MSE (as
published, on the assay's own score scale) and Spearman (as PEER reports it).

Data: ``dms/BLAT_ECOLX_Stiffler_2015`` (ProteinGym; Stiffler et al. 2015, the scan Envision and the
paper used).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neural_network import MLPRegressor

from ..io import iter_fasta
from ._common import BenchModel, Context, Row, head, sample_at_most
from .mutation import load_assay

TASK = "activity"
ASSAY = "BLAT_ECOLX_Stiffler_2015"
N_FOLDS = 5


def regressors(seed: int, pca_cap: int = 0) -> dict:
    """The two published read-outs: a linear model and a small multilayer perceptron."""
    return {
        "ridge": head(RidgeCV(alphas=np.logspace(-2, 4, 13)), seed, pca_cap),
        "mlp": head(MLPRegressor(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=300, early_stopping=True,
                                 random_state=seed), seed, pca_cap),
    }


def variant_set(ctx: Context) -> pd.DataFrame:
    wt = next(iter(iter_fasta(ctx.data("dms", f"{ASSAY}.fasta"))))[1].upper()
    assay = load_assay(ctx.data("dms", f"{ASSAY}.csv"), wt, ASSAY)
    keep = sample_at_most(range(len(assay.variants)), ctx.sizes["activity_variants"], ctx.rng(TASK))
    seqs = []
    for i in keep:
        s = list(wt)
        for p, _, m in assay.variants[i]:
            s[p] = m
        seqs.append("".join(s))
    folds = np.zeros(len(keep), dtype=int)
    for f, (_, test) in enumerate(KFold(N_FOLDS, shuffle=True, random_state=ctx.seed).split(keep)):
        folds[test] = f
    out = pd.DataFrame({"mutant": [assay.mutants[i] for i in keep], "score": assay.fitness[keep],
                        "sequence": seqs, "fold": folds})
    ctx.write_split(TASK, out[["mutant", "score", "fold"]])
    return out


def run(ctx: Context, model: BenchModel) -> list[Row]:
    data = variant_set(ctx)
    x = model.pooled(data["sequence"].tolist())
    y = data["score"].to_numpy()
    folds = data["fold"].to_numpy()
    cv = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(N_FOLDS)]
    rows = []
    for name, reg in regressors(ctx.seed, ctx.pca_cap).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pred = cross_val_predict(reg, x, y, cv=cv)
        rows.append(Row(TASK, f"mse_{name}", float(np.mean((pred - y) ** 2)), len(y), f"{N_FOLDS}-fold CV"))
        rows.append(Row(TASK, f"spearman_{name}", float(spearmanr(pred, y).statistic), len(y)))
    return rows
