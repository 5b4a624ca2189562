"""Time the whole downstream suite for the baselines (and protlens-small once it is trained).

    python benchmarks/bench_suite.py [--out /tmp/protlens-bench] [--model M ...] [--threads 2] [--heldout IDS] [--smoke]

Runs ``protlens.bench.run_bench`` with the default subsample sizes on CPU, prints the table and
writes benchmarks/results/bench.md (command, machine, date, wall time per model and task, table).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from protlens.bench import run_bench
from protlens.models import available_bundled

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="models (default: kmer, kmer1, random 8M ESM-2, protlens-small "
                    "if bundled)")
    ap.add_argument("--out", default="/tmp/protlens-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--data", default=None)
    ap.add_argument("--heldout", default=None, help="ECE held-out ids or FASTA (e.g. the ece_holdout split of the "
                    "run that trained protlens-small); default: a seeded 10%% of the corpus")
    ap.add_argument("--report", default=str(HERE / "results" / "bench.md"))
    ap.add_argument("--machine", default="2-core CPU, 24 GB, no GPU")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.model or ["kmer", "kmer1", "random:esm2_t6_8M_UR50D"] + [
        m for m in available_bundled() if m == "protlens-small"]
    t0, c0 = time.perf_counter(), time.process_time()
    df = run_bench(models, "all", args.out, smoke=args.smoke, data_dir=args.data, heldout=args.heldout)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    table = (Path(args.out) / "results.md").read_text()
    per_model = df.groupby("model", sort=False)["seconds"].apply(
        lambda s: s.groupby(df.loc[s.index, "task"]).first().sum())
    lines = [
        "## Downstream benchmark suite (issue 7)", "",
        f"Command: `{' '.join(['python', *sys.argv])}`  ",
        f"Machine: {args.machine} ({platform.processor() or platform.machine()}, torch threads {args.threads}); "
        f"date {args.date}; torch {torch.__version__}.  ",
        f"Total wall time: **{wall / 60:.1f} min** for {', '.join(models)}; CPU time of the process "
        f"{cpu / 60:.1f} min (wall > CPU / threads means other jobs shared the cores while measuring).  ",
        "Seconds per model (sum over tasks): " + ", ".join(f"{m} {s:.0f}" for m, s in per_model.items()) + ".", "",
        table,
    ]
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
