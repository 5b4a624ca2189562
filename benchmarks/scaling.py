"""Scaling of protlens' downstream steps on synthetic embeddings (issue 8).

Every step runs in a fresh subprocess so that its peak memory (``ru_maxrss``, which includes
loading the embeddings) and its time are its own. Inputs are Gaussian-mixture embeddings
(d = 320, 50 components of unequal size and spread), written once to a temporary folder; the
kNN graph made by the ``knn`` step is reused by the graph steps.

    python benchmarks/scaling.py --sizes 10000 30000 100000 --pipeline 300000

Steps: knn (protlens.tl.knn, backend chosen by size), kmeans (k = 50), spectral (k = 50, on the
kNN graph), leiden (resolution 1.0, on the kNN graph), tsne (openTSNE, FFT), umap; plus
scikit-learn defaults (KMeans, SpectralClustering) where they fit. ``--pipeline N`` runs
kNN + Leiden + k-means + t-SNE end to end in one process (the issue's 300k target), with t-SNE
affinities taken from the same kNN graph, as ``tl.project`` does at that size (the standalone
``tsne`` step is openTSNE's default perplexity-30 search, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_COMPONENTS = 50
DIM = 320
#: OpenMP threads spin while waiting; on a shared machine that burns the other jobs' cores.
CHILD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def make_embeddings(n: int, d: int = DIM, k: int = N_COMPONENTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture: Dirichlet component sizes, per-component spread, overlapping classes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)).astype(np.float32)
    sizes = rng.dirichlet(np.full(k, 2.0))
    y = rng.choice(k, size=n, p=sizes)
    spread = rng.uniform(1.5, 3.0, size=k).astype(np.float32)
    X = centers[y] + rng.normal(size=(n, d)).astype(np.float32) * spread[y, None]
    return X.astype(np.float32), y


def data_paths(workdir: Path, n: int) -> dict[str, Path]:
    return {"X": workdir / f"X_{n}.npy", "y": workdir / f"y_{n}.npy", "graph": workdir / f"graph_{n}.npz"}


def _rusage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024**2  # Linux: KiB -> GiB


def run_step(step: str, n: int, workdir: Path) -> dict:
    """Body of one child process: load inputs, time the step, report time/CPU/peak RSS/quality."""
    import scipy.sparse as sp
    from sklearn.metrics import adjusted_rand_score

    paths = data_paths(workdir, n)
    X, y = np.load(paths["X"]), np.load(paths["y"])
    out: dict = {"step": step, "n": n}
    graph = sp.load_npz(paths["graph"]) if step in ("spectral", "leiden") else None
    cpu0, t0 = _rusage()[0], time.perf_counter()
    labels = None
    if step == "knn":
        from protlens.tl import knn, knn_graph

        res = knn(X, 15, metric="cosine")
        _, conn = knn_graph(res)
        out["backend"] = res.backend
        sp.save_npz(paths["graph"], conn)
        out["knn_label_purity"] = float((y[res.indices] == y[:, None]).mean())
    elif step == "knn_exact_recall":
        # Recall of the chosen backend against exact search, on 2,000 query points.
        from protlens.tl import knn

        res = knn(X, 15, metric="cosine")
        import faiss

        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        q = np.random.default_rng(0).choice(n, size=min(2000, n), replace=False)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(Xn)
        exact = index.search(Xn[q], 16)[1][:, 1:]
        out["backend"] = res.backend
        out["recall@15"] = float(np.mean([len(set(a) & set(b)) / 15 for a, b in zip(res.indices[q], exact)]))
    elif step == "kmeans":
        from protlens.tl import KMeansClustering

        est = KMeansClustering(N_COMPONENTS, metric="cosine", random_state=0).fit(X)
        labels, out["backend"] = est.labels_, est.backend_
    elif step == "spectral":
        from protlens.tl import SparseSpectralClustering

        labels = SparseSpectralClustering(N_COMPONENTS, random_state=0).fit(graph).labels_
    elif step == "leiden":
        from protlens.tl import LeidenClustering

        est = LeidenClustering(resolution=1.0, random_state=0).fit(graph)
        labels, out["n_clusters"] = est.labels_, est.n_clusters_
    elif step == "tsne":
        from protlens.tl._reduce import _tsne

        _tsne(X, 2, "cosine", 0)
    elif step == "umap":
        from protlens.tl._reduce import _umap

        _umap(X, 2, "cosine", 0)
    elif step == "sklearn_kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(N_COMPONENTS, random_state=0).fit_predict(X)
    elif step == "sklearn_spectral":
        from sklearn.cluster import SpectralClustering

        labels = SpectralClustering(N_COMPONENTS, random_state=0).fit_predict(X)  # default: dense RBF
    elif step == "pipeline":
        from protlens.tl import KMeansClustering, LeidenClustering, knn, knn_graph
        from protlens.tl._reduce import _tsne, graph_affinities

        parts = {}
        t = time.perf_counter()
        res = knn(X, 15, metric="cosine")
        dist, conn = knn_graph(res)
        parts["knn_s"], out["backend"] = time.perf_counter() - t, res.backend
        t = time.perf_counter()
        leiden = LeidenClustering(resolution=1.0, random_state=0).fit(conn)
        parts["leiden_s"] = time.perf_counter() - t
        t = time.perf_counter()
        km = KMeansClustering(N_COMPONENTS, metric="cosine", random_state=0).fit(X)
        parts["kmeans_s"] = time.perf_counter() - t
        t = time.perf_counter()
        Y, _ = _tsne(X, 2, "cosine", 0, affinities=graph_affinities(dist))  # what tl.project picks at this size
        parts["tsne_s"] = time.perf_counter() - t
        out.update({k: round(v, 1) for k, v in parts.items()})
        out["ARI_leiden"] = round(adjusted_rand_score(y, leiden.labels_), 3)
        out["ARI_kmeans"] = round(adjusted_rand_score(y, km.labels_), 3)
    else:
        raise SystemExit(f"unknown step {step}")
    cpu1, peak = _rusage()
    out.update(wall_s=round(time.perf_counter() - t0, 1), cpu_s=round(cpu1 - cpu0, 1), peak_rss_gb=round(peak, 2))
    if labels is not None:
        out["ARI"] = round(adjusted_rand_score(y, labels), 3)
    if step == "pipeline":  # after the clock: is the map any good? (10-NN label accuracy, 3-fold, 20k points)
        from sklearn.model_selection import cross_val_score
        from sklearn.neighbors import KNeighborsClassifier

        sub = np.random.default_rng(0).choice(n, min(n, 20_000), replace=False)
        out["tsne_10nn_acc"] = round(float(cross_val_score(KNeighborsClassifier(10), Y[sub], y[sub], cv=3).mean()), 3)
    return out


def spawn(step: str, n: int, workdir: Path, timeout: float, mem_limit_gb: float | None = None) -> dict:
    """Run one step in a child process (optionally under an address-space limit)."""
    cmd = [sys.executable, __file__, "--child", step, "--n", str(n), "--workdir", str(workdir)]
    if mem_limit_gb:
        cmd += ["--mem-limit-gb", str(mem_limit_gb)]
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **CHILD_ENV})
    except subprocess.TimeoutExpired:
        return {"step": step, "n": n, "status": f"timeout > {timeout:.0f} s", "load": round(load, 1)}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [
            f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}, no message"]
        status = "out of memory" if "MemoryError" in proc.stderr or "ArrayMemoryError" in proc.stderr else tail[0]
        return {"step": step, "n": n, "status": status[:80], "load": round(load, 1)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = round(load, 1)
    return result


def ensure_data(workdir: Path, n: int) -> None:
    paths = data_paths(workdir, n)
    if not paths["X"].exists():
        X, y = make_embeddings(n)
        np.save(paths["X"], X)
        np.save(paths["y"], y)


def fmt_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


COLUMNS = ["step", "n", "backend", "wall_s", "cpu_s", "peak_rss_gb", "ARI", "status", "load"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--steps", nargs="*", default=["knn", "knn_exact_recall", "kmeans", "spectral", "leiden",
                                                   "tsne", "umap", "sklearn_kmeans", "sklearn_spectral"])
    ap.add_argument("--pipeline", type=int, nargs="*", default=[300_000])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--sklearn-max-n", type=int, default=30_000,
                    help="skip scikit-learn defaults above this n (dense spectral needs O(n^2) memory; k-means is slow)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mem-limit-gb", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.mem_limit_gb:
            limit = int(args.mem_limit_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_step(args.child, args.n, args.workdir)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="protlens_scaling_"))
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs; data in {workdir}", flush=True)
    rows = []
    for n in args.sizes:
        ensure_data(workdir, n)
        for step in args.steps:
            if step.startswith("sklearn") and n > args.sklearn_max_n:
                rows.append({"step": step, "n": n, "status": f"skipped (n > {args.sklearn_max_n}, --sklearn-max-n)"})
                continue
            rows.append(spawn(step, n, workdir, args.timeout, mem_limit_gb=16 if step.startswith("sklearn") else None))
            print(json.dumps(rows[-1]), flush=True)
    for n in args.pipeline:
        ensure_data(workdir, n)
        rows.append(spawn("pipeline", n, workdir, args.timeout))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(fmt_table([r for r in rows if r["step"] != "pipeline"], COLUMNS + ["recall@15"]))
    pipe = [r for r in rows if r["step"] == "pipeline"]
    if pipe:
        print()
        print(fmt_table(pipe, ["n", "backend", "knn_s", "leiden_s", "kmeans_s", "tsne_s", "wall_s", "cpu_s",
                               "peak_rss_gb", "ARI_leiden", "ARI_kmeans", "tsne_10nn_acc", "status", "load"]))


if __name__ == "__main__":
    main()
