"""Spectral and Leiden at n = 5k, 20k, 50k x 320 float32 (issue 3 target: < 2 min, < 4 GB at 50k).

Same harness as benchmarks/scaling.py (one subprocess per step, ru_maxrss peak, Gaussian-mixture
embeddings with 50 components); scikit-learn's default dense SpectralClustering alongside, under
a 16 GB address-space limit and a time limit, "where it fits".

    python benchmarks/cluster_scale.py [--summary benchmarks/results/cluster_scale.summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from scaling import COLUMNS, ensure_data, fmt_table, spawn
from _results import write_summary

PIPELINE = ("knn", "spectral", "leiden")
TARGET_N = 50_000


def summary_rows(rows: list[dict]) -> list[dict]:
    """BENCHMARKS.md's issue-3 row from the measured steps at 50k, so the headline is never typed by hand."""
    mine = [r for r in rows if r["n"] == TARGET_N and r["step"] in PIPELINE and "wall_s" in r]
    if len(mine) != len(PIPELINE):
        return []
    wall, peak = sum(r["wall_s"] for r in mine), max(r["peak_rss_gb"] for r in mine)
    return [{"issue": "3 clustering at scale", "target": "spectral + Leiden on 50k x 320 < 2 min, < 4 GB",
             "measured": f"kNN + spectral + Leiden {wall:.1f} s, {peak:.2f} GB peak",
             "met": "yes" if wall < 120 and peak < 4 else "no"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[5_000, 20_000, 50_000])
    ap.add_argument("--sklearn-sizes", type=int, nargs="*", default=[5_000, 20_000])
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--summary", type=Path, default=None, help="also write the summary row(s) of BENCHMARKS.md here")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="protlens_cluster_scale_"))
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs; data in {workdir}", flush=True)
    rows = []
    for n in args.sizes:
        ensure_data(workdir, n)
        steps = ["knn", "spectral", "leiden"] + (["sklearn_spectral"] if n in args.sklearn_sizes else [])
        for step in steps:
            limit = 16 if step.startswith("sklearn") else None
            rows.append(spawn(step, n, workdir, args.timeout, mem_limit_gb=limit))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(fmt_table(rows, COLUMNS))
    print()
    print("| n | kNN + spectral + Leiden wall_s | cpu_s | max peak_rss_gb |")
    print("|---|---|---|---|")
    for n in args.sizes:
        mine = [r for r in rows if r["n"] == n and r["step"] in PIPELINE and "wall_s" in r]
        if len(mine) == 3:
            print(f"| {n} | {sum(r['wall_s'] for r in mine):.1f} | {sum(r['cpu_s'] for r in mine):.1f} | "
                  f"{max(r['peak_rss_gb'] for r in mine):.2f} |")

    if args.summary:
        write_summary(args.summary, summary_rows(rows))


if __name__ == "__main__":
    main()
