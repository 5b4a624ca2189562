"""Scaling of protlens' downstream steps on synthetic embeddings (issues 8 and 22).

Every step runs in a fresh subprocess so that its peak memory (``ru_maxrss``, which includes
loading the embeddings) and its time are its own. Inputs are Gaussian-mixture embeddings
(d = 320, 50 components of unequal size and spread), written once to a temporary folder; the
kNN graph made by the ``knn`` step is reused by the graph steps.

    python benchmarks/scaling.py --sizes 10000 30000 100000 --pipeline 300000
    python benchmarks/scaling.py --sizes 1000000 --steps knn kmeans leiden knn_recall spectral tsne_graph \
        --pipeline --section "A million points ..."     # issue 22; --sizes 100000 for a quick run

Steps: knn (protlens.tl.knn, backend chosen by size), knn_recall (recall@15 of that graph against
exact search on 10,000 points, and for IVF by nprobe; knn_recall_default: without the nprobe curve), kmeans (k = 50), spectral (k = 50, on the
kNN graph), leiden (resolution 1.0, on the kNN graph), tsne (openTSNE, FFT, its own perplexity
search), tsne_graph (openTSNE on uniform affinities of the kNN graph, as tl.project), umap (its own
neighbour search), umap_graph (neighbours from the kNN graph, as tl.project from 50k points;
umap_graph_pca: the same with PCA instead of spectral initialisation); plus
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
from _results import command, write_summary, write_text_atomic

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
    return {"X": workdir / f"X_{n}.npy", "y": workdir / f"y_{n}.npy", "graph": workdir / f"graph_{n}.npz",
            "dist": workdir / f"dist_{n}.npz", "knn": workdir / f"knn_{n}.npz"}


#: Recall of the kNN graph is measured on this many query points against exact search (issue 22: 10k).
RECALL_SAMPLE = 10_000


def knn_recall(X: np.ndarray, indices: np.ndarray, params: dict, backend: str, by_nprobe: bool = True) -> dict:
    """recall@15 of ``indices`` against exact cosine kNN on a random sample; for IVF also recall by nprobe.

    The nprobe curve rebuilds an index with the same lists (same seed and training sample) and searches
    only the sample query by query, so it shows what a larger ``nprobe`` would buy at this n.
    """
    import faiss

    n, k = indices.shape
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = np.sort(np.random.default_rng(0).choice(n, size=min(RECALL_SAMPLE, n), replace=False))
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(Xn)
    exact = flat.search(Xn[q], k + 1)[1]
    del flat
    exact = [set(row[row != i][:k]) for row, i in zip(exact, q)]

    def recall(found: np.ndarray) -> float:
        return round(float(np.mean([len(e & set(f)) / k for e, f in zip(exact, found)])), 4)

    out = {"recall@15": recall(indices[q]), "recall_sample": len(q)}
    if backend == "faiss-ivf" and by_nprobe:
        from protlens.tl._neighbors import IVF_BATCH_MIN_N

        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(X.shape[1]), X.shape[1], params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0
        if n >= IVF_BATCH_MIN_N:
            index.cp.max_points_per_centroid = 40
        index.train(Xn)
        index.add(Xn)
        curve = {}
        for nprobe in (params["nprobe"], 2 * params["nprobe"], 4 * params["nprobe"]):
            index.nprobe = nprobe
            t = time.process_time()
            found = index.search(Xn[q], k + 1)[1]
            cpu = time.process_time() - t
            found = [row[row != i][:k] for row, i in zip(found, q)]
            curve[nprobe] = {"recall@15": recall(found), "cpu_ms_per_query": round(1000 * cpu / len(q), 2)}
        out["recall_by_nprobe"] = curve
    return out


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
    labels = Y = None  # a clustering's labels, a projection's map
    if step == "knn":
        from protlens.tl import knn, knn_graph

        res = knn(X, 15, metric="cosine")
        dist, conn = knn_graph(res)
        out["backend"], out["knn_params"] = res.backend, res.params
        sp.save_npz(paths["graph"], conn)
        sp.save_npz(paths["dist"], dist)
        np.savez(paths["knn"], indices=res.indices, backend=res.backend, params=json.dumps(res.params))
        out["knn_label_purity"] = float((y[res.indices] == y[:, None]).mean())
    elif step in ("knn_recall", "knn_recall_default"):  # of the graph the knn step saved (not in the target's time)
        saved = np.load(paths["knn"])
        out.update(knn_recall(X, saved["indices"], json.loads(str(saved["params"])), str(saved["backend"]),
                              by_nprobe=step == "knn_recall"))
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

        Y, _ = _tsne(X, 2, "cosine", 0)
    elif step == "tsne_graph":  # what tl.project does from TSNE_GRAPH_MIN_N points: affinities on the kNN graph
        from protlens.tl._reduce import _tsne, graph_affinities

        Y, _ = _tsne(X, 2, "cosine", 0, affinities=graph_affinities(sp.load_npz(paths["dist"])))
    elif step == "umap":
        from protlens.tl._reduce import _umap

        Y, _ = _umap(X, 2, "cosine", 0)
    elif step in ("umap_graph", "umap_graph_pca"):  # as tl.project from UMAP_GRAPH_MIN_N points: kNN-graph neighbours
        from protlens.tl._reduce import _umap, knn_arrays

        init = {"init": "pca"} if step == "umap_graph_pca" else {}  # umap-learn's default init is spectral
        Y, _ = _umap(X, 2, "cosine", 0, knn=knn_arrays(sp.load_npz(paths["dist"])), **init)
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
    if Y is not None:  # after the clock: is the map any good?
        out["tsne_10nn_acc" if step == "pipeline" else "map_10nn_acc"] = map_accuracy(Y, y)
    return out


def map_accuracy(Y: np.ndarray, y: np.ndarray) -> float:
    """10-NN label accuracy on a 2-D map (3-fold, 20k random points): does the map keep the clusters apart?"""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    sub = np.random.default_rng(0).choice(len(y), min(len(y), 20_000), replace=False)
    return round(float(cross_val_score(KNeighborsClassifier(10), Y[sub], y[sub], cv=3).mean()), 3)


def _rss_gb(pid: int) -> float:
    """Current resident memory of a process (Linux /proc), 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def spawn(step: str, n: int, workdir: Path, timeout: float, mem_limit_gb: float | None = None,
          rss_limit_gb: float | None = None) -> dict:
    """Run one step in a child process (optionally under an address-space limit, or stopped above an RSS)."""
    cmd = [sys.executable, __file__, "--child", step, "--n", str(n), "--workdir", str(workdir)]
    if mem_limit_gb:
        cmd += ["--mem-limit-gb", str(mem_limit_gb)]
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **CHILD_ENV})
    t0, stopped = time.monotonic(), None
    while proc.poll() is None:
        if time.monotonic() - t0 > timeout:
            stopped = f"timeout > {timeout:.0f} s"
        elif rss_limit_gb and _rss_gb(proc.pid) > rss_limit_gb:
            stopped = f"stopped: RSS > {rss_limit_gb:g} GB"
        if stopped:
            proc.kill()
            proc.wait()
            return {"step": step, "n": n, "status": stopped, "load": round(load, 1)}
        time.sleep(1.0)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or [
            f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}, no message"]
        status = "out of memory" if "MemoryError" in stderr or "ArrayMemoryError" in stderr else tail[0]
        return {"step": step, "n": n, "status": status[:80], "load": round(load, 1)}
    result = json.loads(stdout.strip().splitlines()[-1])
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


COLUMNS = ["step", "n", "backend", "wall_s", "cpu_s", "peak_rss_gb", "ARI", "map_10nn_acc", "status", "load"]


def machine() -> str:
    """CPU model, core count and the widest vector ISA the kernel reports (what the kernels can use)."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), platform.processor())
    flags = set(next((x.split(":", 1)[1].split() for x in info if x.startswith("flags")), []))
    isa = next((name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags),
               "SSE")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{model}, {os.cpu_count()} CPUs, {isa}, {mem:.0f} GB RAM"


#: Steps whose sum is the issue-22 target at a million points (< 10 min, < 16 GB on 2 cores).
TARGET_STEPS = ("knn", "leiden", "kmeans")


def write_section(rows: list[dict], title: str, command: str, load_note: str, out: Path) -> None:
    """Write (or replace) the ``## title`` section of ``out`` and, at 1M, the target rows of the summary."""
    started = rows[0].get("started", "") if rows else ""
    lines = [f"## {title}", "", f"Command: `{command}` ({started}). Machine: {machine()}.",
             f"Load: {load_note} (1-min load average at each step's start in the `load` column). Every step runs in "
             "its own process: `peak_rss_gb` is its `ru_maxrss` including the loaded embeddings, `cpu_s` its user + "
             "system CPU time; under load, `cpu_s` is the better guide to an idle machine than `wall_s`.", "",
             fmt_table(rows, COLUMNS + ["recall@15"]), ""]
    for r in rows:
        if r.get("knn_params"):
            lines.append(f"- kNN at n = {r['n']:,}: {r['backend']} {json.dumps(r['knn_params'])}; label purity of "
                         f"the 15 neighbours {r['knn_label_purity']:.3f}.")
        if r.get("recall_by_nprobe"):
            curve = "; ".join(f"nprobe {p}: recall@15 {v['recall@15']}, {v['cpu_ms_per_query']} CPU ms/query "
                              "(query by query)" for p, v in r["recall_by_nprobe"].items())
            lines.append(f"- Recall against exact cosine kNN on {r['recall_sample']:,} random points "
                         f"(n = {r['n']:,}): {curve}.")
    by_n: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_n.setdefault(r["n"], {})[r["step"]] = r
    summary = []
    for n, steps in by_n.items():
        missing = [s for s in TARGET_STEPS if "wall_s" not in steps.get(s, {})]
        if missing:
            done = [s for s in TARGET_STEPS if s not in missing]
            lines.append(f"- Not measured at n = {n:,}: {', '.join(missing)} (did not finish in this run); "
                         + ", ".join(f"{s} {steps[s]['wall_s']:.0f} s wall / {steps[s]['cpu_s']:.0f} s CPU"
                                     for s in done) + ".")
            if n >= 1_000_000:
                summary.append({"issue": "22", "target": f"kNN + Leiden + k-means on {n:,} x {DIM} in < 10 min and "
                                "< 16 GB on 2 cores", "measured": "; ".join(
                                    f"{s}: {steps[s]['wall_s']:.0f} s wall, {steps[s]['cpu_s']:.0f} s CPU, "
                                    f"{steps[s]['peak_rss_gb']:.2f} GB" for s in done) + f"; {', '.join(missing)}: "
                                "not finished in the session (machine shared, load average 10-17 on 2 cores)",
                                "met": "not measured"})
            if "recall@15" in steps.get("knn_recall", steps.get("knn_recall_default", {})):
                rec = steps.get("knn_recall", steps.get("knn_recall_default"))["recall@15"]
                summary.append({"issue": "22", "target": "kNN recall@15 >= 0.9 against exact search (10k sample)",
                                "measured": f"{rec} at n = {n:,}", "met": "yes" if rec >= 0.9 else "no"})
            continue
        wall = sum(steps[s]["wall_s"] for s in TARGET_STEPS)
        cpu = sum(steps[s]["cpu_s"] for s in TARGET_STEPS)
        peak = max(steps[s]["peak_rss_gb"] for s in TARGET_STEPS)
        lines.append(f"- **kNN + Leiden + k-means at n = {n:,}: {wall:.0f} s wall ({wall / 60:.1f} min), "
                     f"{cpu:.0f} s CPU, peak {peak:.2f} GB** (target < 10 min, < 16 GB on 2 cores).")
        if n >= 1_000_000:
            load = max(steps[s].get("load", 0) for s in TARGET_STEPS)
            summary += [
                {"issue": "22", "target": f"kNN + Leiden + k-means on {n:,} x {DIM} in < 10 min on 2 cores",
                 "measured": f"{wall / 60:.1f} min wall, {cpu / 60:.1f} CPU-min (load average up to {load:.0f} "
                             "from other jobs)", "met": "yes" if wall < 600 else "no"},
                {"issue": "22", "target": f"kNN + Leiden + k-means on {n:,} x {DIM} in < 16 GB",
                 "measured": f"peak RSS {peak:.2f} GB", "met": "yes" if peak < 16 else "no"},
            ]
            rec = steps.get("knn_recall", steps.get("knn_recall_default", {})).get("recall@15")
            if rec is not None:
                summary.append({"issue": "22", "target": "kNN recall@15 >= 0.9 against exact search (10k sample)",
                                "measured": f"{rec} at n = {n:,} (nprobe {steps['knn']['knn_params'].get('nprobe')})",
                                "met": "yes" if rec >= 0.9 else "no"})
    text = "\n".join(lines) + "\n"
    old = out.read_text() if out.exists() else ""
    start = old.find(f"## {title}\n")
    if start >= 0:
        end = old.find("\n## ", start + 1)
        old = old[:start] + old[end + 1:] if end >= 0 else old[:start]
    write_text_atomic(out, old.rstrip("\n") + ("\n\n" if old.strip() else "") + text)
    if summary:  # replaces the rows of the same targets; other sections' rows stay
        path = out.with_suffix(".summary.json")
        kept = [r for r in (json.loads(path.read_text()) if path.exists() else [])
                if r["target"] not in {s["target"] for s in summary}]
        write_summary(path, kept + summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--steps", nargs="*", default=["knn", "knn_recall", "kmeans", "spectral", "leiden",
                                                   "tsne", "umap", "sklearn_kmeans", "sklearn_spectral"])
    ap.add_argument("--pipeline", type=int, nargs="*", default=[300_000])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--rss-limit-gb", type=float, default=14.0, help="stop a step whose RSS passes this")
    ap.add_argument("--sklearn-max-n", type=int, default=30_000,
                    help="skip scikit-learn defaults above this n (dense spectral needs O(n^2) memory; k-means is slow)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--section", default=None, help="write the per-step rows as this '## section' of --results")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "scaling.md")
    ap.add_argument("--load-note", default="not stated", help="who else was using the machine")
    ap.add_argument("--report-only", action="store_true", help="rewrite --section from --workdir/rows.jsonl")
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
    this_run = command()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="protlens_scaling_"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "rows.jsonl"
    if args.report_only:
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        commands = "`; `".join(dict.fromkeys(r["command"] for r in rows))
        return write_section([r for r in rows if r["step"] != "pipeline"], args.section, commands,
                             args.load_note, args.results)
    print(f"# machine: {machine()}; data in {workdir}", flush=True)
    rows = []

    def record(row: dict) -> None:
        row.update(command=this_run, started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        rows.append(row)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for n in args.sizes:
        ensure_data(workdir, n)
        for step in args.steps:
            if step.startswith("sklearn") and n > args.sklearn_max_n:
                record({"step": step, "n": n, "status": f"skipped (n > {args.sklearn_max_n}, --sklearn-max-n)"})
                continue
            record(spawn(step, n, workdir, args.timeout, mem_limit_gb=16 if step.startswith("sklearn") else None,
                         rss_limit_gb=args.rss_limit_gb))
    for n in args.pipeline:
        ensure_data(workdir, n)
        record(spawn("pipeline", n, workdir, args.timeout, rss_limit_gb=args.rss_limit_gb))
    print()
    print(fmt_table([r for r in rows if r["step"] != "pipeline"], COLUMNS + ["recall@15"]))
    pipe = [r for r in rows if r["step"] == "pipeline"]
    if pipe:
        print()
        print(fmt_table(pipe, ["n", "backend", "knn_s", "leiden_s", "kmeans_s", "tsne_s", "wall_s", "cpu_s",
                               "peak_rss_gb", "ARI_leiden", "ARI_kmeans", "tsne_10nn_acc", "status", "load"]))
    if args.section:
        write_section([r for r in rows if r["step"] != "pipeline"], args.section, this_run, args.load_note,
                      args.results)


if __name__ == "__main__":
    main()
