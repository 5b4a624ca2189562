"""``tl.project``: 2-D (or n-D) maps of the embeddings with openTSNE, UMAP or PCA."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np

from .. import _keys as K
from ..errors import InputError
from ._utils import SINGLE_THREAD_MAX_N, get_rep

PROJECT_METHODS = {"tsne": K.X_TSNE, "umap": K.X_UMAP, "pca": K.X_PCA}


def _tsne(X: np.ndarray, n_components: int, metric: str, random_state: int, perplexity: float = 30.0,
          n_jobs: int | None = None, **params) -> tuple[np.ndarray, dict]:
    """openTSNE: FFT-accelerated (Linderman 2019) and exact-neighbour-free, so it scales to 1e5+.

    Perplexity is capped at (n - 1) / 3 so tiny inputs still run (with a warning).
    """
    from openTSNE import TSNE

    cap = (len(X) - 1) / 3
    if perplexity > cap:
        warnings.warn(f"project (tsne): perplexity {perplexity} is too large for {len(X)} points; "
                      f"using {cap:.1f}", stacklevel=3)
        perplexity = cap
    if n_jobs is None:
        n_jobs = 1 if len(X) <= SINGLE_THREAD_MAX_N else -1
    tsne = TSNE(n_components=n_components, perplexity=perplexity, metric=metric, random_state=random_state,
                n_jobs=n_jobs, **params)
    return np.asarray(tsne.fit(X)), {"perplexity": perplexity}


def _umap(X: np.ndarray, n_components: int, metric: str, random_state: int, n_neighbors: int = 15,
          min_dist: float = 0.1, **params) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():  # umap warns at import that optional TensorFlow is absent
        warnings.simplefilter("ignore", ImportWarning)
        from umap import UMAP

    n_neighbors = min(n_neighbors, len(X) - 1)
    # A fixed random_state makes UMAP single-threaded; say so rather than let it warn.
    model = UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                 random_state=random_state, n_jobs=1, **params)
    return model.fit_transform(X), {"n_neighbors": n_neighbors, "min_dist": min_dist}


def _pca(X: np.ndarray, n_components: int, metric: str, random_state: int, **params) -> tuple[np.ndarray, dict]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    n_components = min(n_components, *X.shape)
    pca = PCA(n_components=n_components, random_state=random_state, **params)
    Y = pca.fit_transform(normalize(X) if metric == "cosine" else X)
    return Y, {"explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float64)}


def project(adata: ad.AnnData, method: str = "tsne", use_rep: str = "X", random_state: int = 0,
            n_components: int = 2, metric: str = "cosine", key_added: str | None = None, **params) -> None:
    """Embed ``use_rep`` into ``n_components`` dimensions; writes ``obsm["X_<method>"]``.

    ``metric="cosine"`` is honoured by t-SNE/UMAP directly and by PCA through L2-normalised
    rows. Extra ``params`` go to openTSNE.TSNE / umap.UMAP / sklearn PCA.
    """
    if method not in PROJECT_METHODS:
        raise InputError(f"project: unknown method '{method}' (choose from {', '.join(PROJECT_METHODS)})")
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"project: unknown metric '{metric}' (cosine or euclidean)")
    X = get_rep(adata, use_rep, f"project ({method})")
    run = {"tsne": _tsne, "umap": _umap, "pca": _pca}[method]
    Y, resolved = run(X, n_components, metric, random_state, **params)
    key = key_added or PROJECT_METHODS[method]
    adata.obsm[key] = np.asarray(Y, dtype=np.float32)
    record = dict(method=method, use_rep=use_rep, n_components=n_components, metric=metric,
                  random_state=random_state)
    record.update(params)
    record.update({k: v for k, v in resolved.items() if k != "explained_variance_ratio"})
    adata.uns[key.removeprefix("X_")] = {"params": record}
    if method == "pca":
        adata.uns[key.removeprefix("X_")]["variance_ratio"] = resolved["explained_variance_ratio"]
