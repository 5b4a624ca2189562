"""``tl.evaluate``: agreement of clusterings with known labels, read against chance.

Agreement scores mean little without their chance level (NMI with 40 classes is ~0.4 for a
random clustering of the same sizes), so every table carries a ``chance`` row (true labels
permuted, scored against themselves) and per-clustering ``*_chance`` columns (true labels
permuted, scored against that clustering), plus 95% intervals for ARI and NMI from random half-samples.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .. import _keys as K
from ..errors import InputError
from ._cluster import CLUSTER_METHODS
from ._estimators import silhouette
from ._utils import get_rep

#: Clusterings made outside tl.cluster that evaluate() also finds on its own.
EXTRA_CLUSTER_METHODS = ("mmseqs",)
CHANCE = "chance"


def _clustering_keys(adata: ad.AnnData) -> list[str]:
    methods = set(CLUSTER_METHODS) | set(EXTRA_CLUSTER_METHODS)
    return [k for k in adata.obs.columns
            if isinstance(adata.uns.get(k), dict) and adata.uns[k].get("params", {}).get("method") in methods]


def _half_sample_interval(y: np.ndarray, c: np.ndarray, score, estimate: float, halves: np.ndarray,
                          level: float = 0.95) -> tuple[float, float]:
    """Interval for an agreement score from random half-samples drawn without replacement.

    The ordinary bootstrap resamples with replacement, and duplicated proteins always agree with
    each other, so bootstrap ARI/NMI are biased upwards and percentile intervals can miss the
    estimate altogether. Half-samples have no duplicates, and their spread matches the sampling
    spread of the full-size statistic (delete-n/2 jackknife); the interval is the estimate plus the
    percentiles of the half-sample deviations from their mean.
    """
    stats = np.array([score(y[h], c[h]) for h in halves])
    alpha = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats - stats.mean(), [alpha, 100 - alpha])
    return float(max(estimate + lo, -1.0)), float(min(estimate + hi, 1.0))


def _agreement(y: np.ndarray, c: np.ndarray) -> dict[str, float]:
    """Agreement scores; with a single label class there is nothing to agree on, so ARI, NMI and AMI are 0.

    (scikit-learn scores two one-group partitions as identical, 1.0, which would make a chance row read as
    perfect agreement.)
    """
    h, comp, v = skm.homogeneity_completeness_v_measure(y, c)
    if len(np.unique(y)) < 2:
        return {"ARI": 0.0, "NMI": 0.0, "AMI": 0.0, "homogeneity": h, "completeness": comp, "v_measure": v}
    return {"ARI": skm.adjusted_rand_score(y, c), "NMI": skm.normalized_mutual_info_score(y, c),
            "AMI": skm.adjusted_mutual_info_score(y, c), "homogeneity": h, "completeness": comp, "v_measure": v}


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values.astype(str), sort=True)[0]


def evaluate(adata: ad.AnnData, label_key: str | None, cluster_keys: list[str] | None = None, n_boot: int = 200,
             random_state: int = 0, use_rep: str = "X", metric: str = "cosine", n_permutations: int = 50,
             silhouette_sample: int = 5000, key_added: str = K.EVALUATE) -> pd.DataFrame:
    """Score clusterings (default: every ``tl.cluster`` result in obs) against ``obs[label_key]``.

    Rows: clusterings, then ``chance``. Columns: n_clusters, ARI (+ 95% interval from ``n_boot`` half-samples), NMI
    (+ CI), AMI, homogeneity, completeness, V-measure, silhouette of the clustering on
    ``use_rep`` (cosine by default), ARI_chance, NMI_chance. Sequences without a label are
    left out (with a warning giving the count). With ``label_key=None`` only intrinsic scores
    (silhouette, Calinski-Harabasz, Davies-Bouldin) are given. Also stored in ``uns[key_added]``.
    """
    keys = list(cluster_keys) if cluster_keys is not None else _clustering_keys(adata)
    if not keys:
        raise InputError("evaluate: no clusterings to evaluate (run protlens.tl.cluster first or pass cluster_keys)")
    missing = [k for k in keys if k not in adata.obs]
    if missing:
        raise InputError(f"evaluate: no clustering column(s) {', '.join(missing)} in obs")
    rep = adata.X if use_rep == "X" else adata.obsm.get(use_rep)
    X = get_rep(adata, use_rep, "evaluate") if rep is not None and rep.shape[1] > 0 else None
    rng = np.random.default_rng(random_state)
    rows: dict[str, dict] = {}

    def intrinsic(c: np.ndarray, rows_mask: np.ndarray | slice = slice(None)) -> float:
        if X is None:
            return float("nan")
        return silhouette(X[rows_mask], c, metric, silhouette_sample, random_state)

    if label_key is None:
        for key in keys:
            c = _codes(adata.obs[key])
            k = len(np.unique(c))
            defined = X is not None and 2 <= k < len(c)
            rows[key] = {"n_clusters": k, "silhouette": intrinsic(c),
                         "calinski_harabasz": skm.calinski_harabasz_score(X, c) if defined else np.nan,
                         "davies_bouldin": skm.davies_bouldin_score(X, c) if defined else np.nan}
        table = pd.DataFrame.from_dict(rows, orient="index")
        n_used = adata.n_obs
    else:
        if label_key not in adata.obs:
            raise InputError(f"evaluate: no label column '{label_key}' in obs "
                             f"(columns: {', '.join(map(str, adata.obs.columns))})")
        raw = adata.obs[label_key]
        labelled = (raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
        n_used = int(labelled.sum())
        if n_used < 3:
            raise InputError(f"evaluate: only {n_used} sequence(s) have a '{label_key}' label; need at least 3")
        if n_used < adata.n_obs:
            unlabelled = adata.obs_names[~labelled]
            warnings.warn(f"evaluate: {adata.n_obs - n_used} of {adata.n_obs} sequences have no '{label_key}' "
                          f"label and are left out (first: {', '.join(map(str, unlabelled[:5]))})", stacklevel=2)
        y = _codes(raw[labelled])
        sizes = raw[labelled].astype(str).value_counts()
        singletons = sizes.index[sizes == 1]
        if len(singletons):
            warnings.warn(f"evaluate: {len(singletons)} '{label_key}' class(es) have a single member "
                          f"({', '.join(map(str, singletons[:5]))}); no clustering can group them with "
                          "anything", stacklevel=2)
        m = len(y)
        halves = np.array([rng.choice(m, m // 2, replace=False) for _ in range(n_boot)]).reshape(n_boot, m // 2)
        perms = [rng.permutation(y) for _ in range(n_permutations)]
        for key in keys:
            c = _codes(adata.obs[key][labelled])
            row = {"n_clusters": len(np.unique(c)), **_agreement(y, c)}
            for name, score in (("ARI", skm.adjusted_rand_score), ("NMI", skm.normalized_mutual_info_score)):
                if n_boot:
                    lo, hi = _half_sample_interval(y, c, score, row[name], halves)
                else:
                    lo = hi = np.nan
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = lo, hi
                row[f"{name}_chance"] = float(np.mean([score(p, c) for p in perms])) if perms else np.nan
            row["silhouette"] = intrinsic(c, labelled)
            rows[key] = row
        chance = pd.DataFrame([_agreement(y, p) for p in perms]).mean().to_dict() if perms else {}
        rows[CHANCE] = {"n_clusters": len(np.unique(y)), **chance,
                        "silhouette": intrinsic(perms[0], labelled) if perms else np.nan}
        columns = ["n_clusters", "ARI", "ARI_ci_low", "ARI_ci_high", "NMI", "NMI_ci_low", "NMI_ci_high", "AMI",
                   "homogeneity", "completeness", "v_measure", "silhouette", "ARI_chance", "NMI_chance"]
        table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    table.index.name = "clustering"
    table["n_clusters"] = table["n_clusters"].astype(int)
    adata.uns[key_added] = {
        "table": table,
        "params": dict(label_key=label_key, cluster_keys=keys, n_boot=n_boot, random_state=random_state,
                       use_rep=use_rep if X is not None else None, metric=metric, n_permutations=n_permutations,
                       silhouette_sample=silhouette_sample),
        "n_evaluated": n_used,
    }
    if label_key is not None and X is not None:
        adata.uns[key_added]["label_silhouette"] = intrinsic(y, labelled)
    return table
