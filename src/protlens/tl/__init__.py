"""Analysis tools over AnnData: kNN graph, clustering, 2-D projection, evaluation.

Each ``tl.*`` function reads one representation, writes one slot plus ``uns[key]["params"]``
and returns None (``evaluate`` also returns its table). The array-level estimators it uses
follow the scikit-learn contract and can be used on plain arrays.
"""

from ._cluster import CLUSTER_METHODS, cluster
from ._estimators import HierarchicalClustering, KMeansClustering, LeidenClustering, SparseSpectralClustering
from ._evaluate import evaluate
from ._neighbors import KnnResult, knn, knn_graph, neighbors
from ._reduce import PROJECT_METHODS, project



def explain(adata, clusters: str = "spectral", **kwargs) -> None:
    """``tl.explain``: residue-level explanations of a clustering (see :func:`protlens.explain.explain`).

    Imported on call because the explain package itself builds on ``tl``.
    """
    from ..explain import explain as _explain

    _explain(adata, clusters, **kwargs)


__all__ = [
    "explain",
    "CLUSTER_METHODS",
    "PROJECT_METHODS",
    "HierarchicalClustering",
    "KMeansClustering",
    "KnnResult",
    "LeidenClustering",
    "SparseSpectralClustering",
    "cluster",
    "evaluate",
    "knn",
    "knn_graph",
    "neighbors",
    "project",
]
