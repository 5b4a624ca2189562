"""Choosing the number of clusters: every candidate scored by every rule, the evidence kept.

A method run without ``n_clusters`` clusters the data at every candidate (a grid of k, or of
resolutions for Leiden) and scores each candidate by the rules that apply to it:

- ``eigengap`` (spectral): the gap after the k-th eigenvalue of the normalised Laplacian;
- ``silhouette``: mean silhouette of the partition (cosine on vectors, 1 - similarity on a
  similarity matrix);
- ``modularity`` (Leiden): weighted modularity of the partition on the graph;
- ``stability``: how well the partition survives losing half the data: the mean ARI between the
  clustering of a random half-sample (same method, same k or resolution, graph rebuilt on that
  half) and the full clustering restricted to that half (the resampling idea of consensus
  clustering, Monti et al. 2003; Ben-Hur et al. 2002). Coarser levels of a hierarchy are often
  just as stable, so among candidates within :data:`STABILITY_TOLERANCE` of the best the one
  with the most clusters is chosen.

The rule that decides is ``rule`` (default :data:`DEFAULT_RULE`, chosen from the evidence in
``benchmarks/results/auto_k.md``); the scores of all rules, the runner-up candidates and the
labels of every candidate are kept so the choice can be reported and questioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from ..errors import InputError
from ._estimators import k_grid, silhouette

#: Rules each method can choose k with.
RULES: dict[str, tuple[str, ...]] = {
    "kmeans": ("silhouette", "stability"),
    "agglomerative": ("silhouette", "stability"),
    "spectral": ("eigengap", "silhouette", "stability"),
    "leiden": ("silhouette", "modularity", "stability"),
}
#: The rule each method uses by default (see benchmarks/results/auto_k.md for the evidence).
DEFAULT_RULE: dict[str, str] = {
    "kmeans": "stability",
    "agglomerative": "silhouette",
    "spectral": "eigengap",
    "leiden": "silhouette",
}
#: Leiden's default resolution grid.
RESOLUTIONS = tuple(float(r) for r in np.geomspace(0.05, 10.0, 12))
#: Half-samples drawn for the stability rule.
STABILITY_DRAWS = 10
#: Stability scores this close to the best count as tied (the finest tied partition is chosen).
STABILITY_TOLERANCE = 0.02
#: k-means restarts in each half-sample fit (the full data keep the method's own setting).
HALF_N_INIT = 3
#: Above this many points stability is measured on a random subset of this size.
STABILITY_MAX_N = 2000


@dataclass
class ClusterData:
    """What a clustering method runs on: vectors (``X``), a dense similarity (``S``) or a graph (``A``).

    ``subset(idx)`` gives the same kind of input for a subset of the points, with the kNN graph
    rebuilt on that subset where it can be (from vectors or a dense similarity).
    """

    X: np.ndarray | None = None
    S: np.ndarray | None = None
    A: sp.csr_matrix | np.ndarray | None = None
    n_neighbors: int = 15
    metric: str = "cosine"
    random_state: int = 0

    @property
    def n(self) -> int:
        return next(m for m in (self.X, self.S, self.A) if m is not None).shape[0]

    def distances(self) -> tuple[np.ndarray | None, str]:
        """(points or distance matrix, metric) the silhouette is computed on."""
        if self.X is not None:
            return self.X, "euclidean"  # rows are L2-normalised for cosine, so euclidean ranks alike
        if self.S is not None:
            D = 1.0 - (self.S + self.S.T) / 2
            np.fill_diagonal(D, 0.0)
            return np.clip(D, 0.0, None), "precomputed"
        return None, ""

    def graph(self) -> sp.csr_matrix | np.ndarray:
        if self.A is not None:
            return self.A
        from ._neighbors import knn, knn_from_similarity, knn_graph

        nn = min(self.n_neighbors, self.n - 1)
        res = knn_from_similarity(self.S, nn) if self.S is not None else knn(self.X, nn, self.metric,
                                                                              random_state=self.random_state)
        return knn_graph(res)[1]

    def subset(self, idx: np.ndarray) -> ClusterData:
        if self.X is not None or self.S is not None:
            return ClusterData(X=None if self.X is None else self.X[idx],
                               S=None if self.S is None else self.S[np.ix_(idx, idx)],
                               n_neighbors=self.n_neighbors, metric=self.metric, random_state=self.random_state)
        A = self.A[idx][:, idx] if sp.issparse(self.A) else self.A[np.ix_(idx, idx)]
        return ClusterData(A=sp.csr_matrix(A), n_neighbors=self.n_neighbors, random_state=self.random_state)


@dataclass
class KSweep:
    """Every candidate's labels and scores; ``table`` has one row per candidate (k, resolution, rules)."""

    table: pd.DataFrame
    labels: np.ndarray  # (n, n_candidates)

    def ranked(self, rule: str) -> list[int]:
        """Candidate rows best first by ``rule`` (ties: fewer clusters first; stability: the finest near-tie first);
        undefined scores are left out."""
        if rule not in self.table:
            raise InputError(f"no '{rule}' scores in this k sweep (have: {', '.join(self._rules())})")
        scores = self.table[rule].to_numpy(dtype=float)
        finite = np.flatnonzero(np.isfinite(scores))
        if not len(finite):
            raise InputError(f"could not choose the number of clusters by {rule}: no candidate has a defined score "
                             "(too few or too similar sequences?); give the number of clusters (--n-clusters)")
        k = self.table["k"].to_numpy()
        if rule == "stability":
            # Every level of a hierarchy can be perfectly stable: among candidates within
            # STABILITY_TOLERANCE of the best, the finest partition wins.
            best = scores[finite].max()
            near = [i for i in finite if scores[i] >= best - STABILITY_TOLERANCE]
            return sorted(near, key=lambda i: -k[i]) + sorted(set(finite) - set(near), key=lambda i: -scores[i])
        return sorted(finite, key=lambda i: (-scores[i], k[i]))

    def defined(self, rule: str) -> bool:
        """Whether ``rule`` scored at least one candidate."""
        return rule in self.table and bool(np.isfinite(self.table[rule].to_numpy(dtype=float)).any())

    def _rules(self) -> list[str]:
        return [c for c in self.table.columns if c in ("eigengap", "silhouette", "modularity", "stability")]

    def choice_by_rule(self) -> dict[str, int]:
        """The k each rule would choose."""
        out = {}
        for rule in self._rules():
            try:
                out[rule] = int(self.table["k"].iat[self.ranked(rule)[0]])
            except InputError:
                continue
        return out


def _spectral_all(data: ClusterData, ks: list[int], random_state: int,
                  params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Labels at every k from one eigenproblem, and the eigengaps."""
    from ._estimators import SparseSpectralClustering

    est = SparseSpectralClustering(None, min_clusters=min(ks), max_clusters=max(ks), random_state=random_state,
                                   **params).fit(data.graph())
    return np.column_stack([est.labels_at(k) for k in ks]), est.eigengaps_


def _candidate_labels(method: str, data: ClusterData, candidates: list, random_state: int,
                      params: dict) -> np.ndarray:
    """(n, n_candidates) labels of ``method`` at each candidate k (or Leiden resolution)."""
    from ._estimators import HierarchicalClustering, KMeansClustering, LeidenClustering

    if method == "kmeans":
        return np.column_stack([KMeansClustering(k, random_state=random_state, **params).fit(data.X).labels_
                                for k in candidates])
    if method == "spectral":
        return _spectral_all(data, candidates, random_state, params)[0]
    if method == "agglomerative":
        D, metric = data.distances()
        est = HierarchicalClustering(2, metric=metric, random_state=random_state, **params).fit(D)
        return np.column_stack([est.cut(k) for k in candidates])
    if method == "leiden":
        est = LeidenClustering(resolution=candidates[0], random_state=random_state, **params).fit(data.graph())
        return np.column_stack([est.partition(r) for r in candidates])
    raise InputError(f"no automatic number of clusters for '{method}'")


def stability_scores(fit_all: Callable[[np.ndarray], np.ndarray], full: np.ndarray, n_draws: int = STABILITY_DRAWS,
                     max_n: int = STABILITY_MAX_N, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) over ``n_draws`` random half-samples of ARI(clustering of the half, ``full`` on the half).

    ``fit_all(idx)`` clusters the points ``idx`` at every candidate and returns (len(idx), n_candidates)
    labels; ``full`` is the (n, n_candidates) labels of the full data. Draws that fail (e.g. a
    half-sample graph with an isolated point) are left out; a candidate with no draw scores NaN.
    """
    rng = np.random.default_rng(random_state)
    n = len(full)
    size = min(n, max_n) // 2
    aris = []
    for _ in range(n_draws):
        idx = np.sort(rng.choice(n, size, replace=False))
        try:
            half = fit_all(idx)
        except (InputError, ValueError):
            continue
        aris.append([adjusted_rand_score(full[idx, j], half[:, j]) if (half[:, j] >= 0).all() else np.nan
                     for j in range(full.shape[1])])
    if not aris:
        nan = np.full(full.shape[1], np.nan)
        return nan, nan
    cols = [c[np.isfinite(c)] for c in np.asarray(aris).T]
    mean = np.array([c.mean() if len(c) else np.nan for c in cols])
    sd = np.array([c.std() if len(c) else np.nan for c in cols])
    return mean, sd


def k_sweep(method: str, data: ClusterData, min_clusters: int = 2, max_clusters: int = 50,
            resolutions: tuple[float, ...] | None = None, stability_draws: int = STABILITY_DRAWS,
            random_state: int = 0, **params) -> KSweep:
    """Cluster at every candidate and score each one by every rule that applies to ``method``."""
    if method not in RULES:
        raise InputError(f"no automatic number of clusters for '{method}' (choose from {', '.join(RULES)})")
    n = data.n
    if method == "leiden":
        candidates = list(resolutions if resolutions is not None else RESOLUTIONS)
    else:
        candidates = k_grid(min_clusters, min(max_clusters, n - 1))
        if not candidates or candidates[0] < 2:
            raise InputError(f"{method}: too few points ({n}) to choose the number of clusters")

    def fit_all(idx: np.ndarray | None) -> np.ndarray:
        """Labels at every candidate; -1 columns for a k the subset is too small for."""
        if idx is None:
            return _candidate_labels(method, data, candidates, random_state, params)
        fits = [c for c in candidates if method == "leiden" or c < len(idx)]
        out = np.full((len(idx), len(candidates)), -1, dtype=np.int64)
        if fits:
            half_params = {**params, "n_init": min(params.get("n_init", 10), HALF_N_INIT)} \
                if method in ("kmeans", "spectral") else params
            out[:, : len(fits)] = _candidate_labels(method, data.subset(idx), fits, random_state, half_params)
        return out

    if method == "spectral":
        labels, gaps = _spectral_all(data, candidates, random_state, params)
    else:
        labels = fit_all(None)
    ks = [len(np.unique(labels[:, j])) for j in range(labels.shape[1])]
    table = pd.DataFrame({"k": ks})
    if method == "leiden":
        table.insert(0, "resolution", candidates)
        A = data.graph()
        table["modularity"] = [_modularity(A, labels[:, j]) if ks[j] > 1 else np.nan for j in range(len(ks))]
    if method == "spectral":
        table["eigengap"] = [float(gaps[k - 1]) for k in candidates]
    D, metric = data.distances()
    if D is not None:
        table["silhouette"] = [silhouette(D, labels[:, j], metric, random_state=random_state)
                               for j in range(len(ks))]
    if stability_draws:
        mean, sd = stability_scores(fit_all, labels, stability_draws, random_state=random_state)
        table["stability"], table["stability_sd"] = mean, sd
    # One cluster is no clustering (and trivially "stable"): such candidates (Leiden at low resolution) never win.
    rules = [c for c in ("modularity", "eigengap", "silhouette", "stability", "stability_sd") if c in table]
    table.loc[table["k"] < 2, rules] = np.nan
    return KSweep(table, labels.astype(np.int64))


def _modularity(A, labels: np.ndarray) -> float:
    """Weighted modularity (igraph) of ``labels`` on the symmetric affinity ``A``."""
    import igraph as ig

    upper = sp.triu(sp.csr_matrix(A), k=1).tocoo()
    graph = ig.Graph(n=A.shape[0], edges=np.column_stack([upper.row, upper.col]))
    return float(graph.modularity(labels.tolist(), weights=upper.data))
