"""Time the whole downstream suite for the baselines and protlens-small, training data kept out.

    python benchmarks/bench_suite.py [--out /tmp/protlens-bench] [--model M ...] [--threads 2] [--fast]
        [--pca-cap N] [--keep-training-data] [--compare-exclusion] [--smoke] [--load "what else ran"]

Runs ``protlens.bench.run_bench`` with the default subsample sizes on CPU (every model's training
proteins excluded from the test pools unless ``--keep-training-data``; mutation on full assays unless
``--fast``), prints the table and writes benchmarks/results/bench.md (command, machine, date, load,
wall time per model and task, table) and bench.summary.json (the summary rows of BENCHMARKS.md).
``--compare-exclusion`` reruns the models that carry training metadata on the filtered tasks with
exclusion off and tables every metric before / after, with the items excluded per task.
Models run one at a time (each excluding the training data of all of them, so the pools are the
same); the report is rewritten after each, so an interrupted run leaves the models it finished.
``--smoke`` writes to --out only (tiny subsets: a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from protlens.bench import run_bench
from protlens.bench._common import Context
from protlens.bench.leakage import TASK_POOLS, Leakage, training_table
from protlens.bench.runner import HEADLINE, markdown_report, resolve_tasks
from protlens.models import available_bundled
from _results import write_summary, write_text_atomic

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    """CPU model name and the ISA torch dispatches to (the machine line of the results)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except (OSError, subprocess.CalledProcessError):
        name = platform.processor() or platform.machine()
    return f"{name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def before_after(after: pd.DataFrame, before: pd.DataFrame, models: list[str]) -> list[str]:
    """Markdown table: every metric of the filtered tasks, score with and without exclusion."""
    key = ["model", "task", "metric"]
    a = after[after["model"].isin(models) & after["metric"].ne("skipped")].set_index(key)["value"]
    b = before[before["model"].isin(models) & before["metric"].ne("skipped")].set_index(key)["value"]
    both = pd.concat({"before (training data in)": b, "after (excluded)": a}, axis=1)
    both = both[both.iloc[:, 0].notna()]  # the tasks rerun without exclusion
    lines = ["| model | task | metric | before (training data in) | after (excluded) |", "|---|---|---|---|---|"]
    for (m, t, metric), row in both.iterrows():
        if metric.startswith("spearman:"):
            continue
        lines.append(f"| {m} | {t} | {metric} | {_fmt(row.iloc[0])} | {_fmt(row.iloc[1])} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="models (default: protlens-small if bundled, kmer, kmer1, "
                    "random 8M ESM-2)")
    ap.add_argument("--out", default="/tmp/protlens-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--fast", action="store_true", help="subsample mutation assays (labelled in the table)")
    ap.add_argument("--pca-cap", type=int, default=0, help="PCA components before each probe (0 = none)")
    ap.add_argument("--keep-training-data", action="store_true", help="do not exclude the models' training proteins")
    ap.add_argument("--compare-exclusion", action="store_true",
                    help="also score the trained models with exclusion off and table before / after")
    ap.add_argument("--tasks", default="all", help="'all' or comma-separated task names")
    ap.add_argument("--data", default=None)
    ap.add_argument("--heldout", default=None, help="ECE held-out ids or FASTA; default: the trained models' own "
                    "ece_holdout split (a seeded 10%% of the corpus when no model has one)")
    ap.add_argument("--report", default=str(HERE / "results" / "bench.md"))
    ap.add_argument("--load", default="not recorded", help="what else ran on the machine (for the report)")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    ap.add_argument("--issue", default=None, help="summary rows = each model's headline metrics under this issue "
                    "(e.g. '20 UniRep'), instead of the suite-timing rows; use with a --report of its own")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.model or [m for m in available_bundled() if m == "protlens-small"] + [
        "kmer", "kmer1", "random:esm2_t6_8M_UR50D"]
    opts = dict(smoke=args.smoke, data_dir=args.data, heldout=args.heldout, fast=args.fast, pca_cap=args.pca_cap)
    t0, c0 = time.perf_counter(), time.process_time()
    parts: list[pd.DataFrame] = []
    for i, m in enumerate(models):
        parts.append(run_bench([m], args.tasks, Path(args.out) / f"model{i}", exclude_training=not args.keep_training_data,
                               exclude_training_of=models, baselines=i == 0, **opts))
        text = report_text(args, models[: i + 1], models, parts, time.perf_counter() - t0, time.process_time() - c0)
        write(args, text, None)
    df = pd.concat(parts, ignore_index=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lines = report_text(args, models, models, parts, wall, cpu).splitlines()
    trained = [m for m in models if training_table(m)[0] is not None]
    if args.compare_exclusion and trained and not args.keep_training_data:
        tasks = [t for t in resolve_tasks(args.tasks) if TASK_POOLS.get(t)]
        t1 = time.perf_counter()
        before = run_bench(trained, tasks, Path(args.out) / "no_exclusion", exclude_training=False, baselines=False,
                           **opts)
        lines += ["### Before / after excluding training data", "",
                  f"The same command's models with training metadata ({', '.join(trained)}), rescored on the "
                  f"filtered tasks with exclusion off (`--keep-training-data`; {(time.perf_counter() - t1) / 60:.1f} "
                  "min). Items excluded per task: the leakage table above.", "", *before_after(df, before, trained), ""]
    tasks = resolve_tasks(args.tasks)
    complete = len(tasks) == len(resolve_tasks("all"))
    summary = [{"issue": "7 benchmark suite", "target": "whole suite for protlens-small + baselines < 30 min on 2 cores",
                "measured": f"{wall / 60:.1f} min wall for {', '.join(models)} ({len(tasks)} of "
                            f"{len(resolve_tasks('all'))} tasks: {', '.join(tasks)}; default subsets, {args.threads} "
                            f"thread(s); mutation {'subsampled (--fast)' if args.fast else 'full assays'}; "
                            f"load: {args.load})",
                "met": ("yes" if wall < 1800 else "no") if complete else "not judged (not the whole suite)"},
               {"issue": "18 leakage-free suite", "target": "training proteins of every model excluded, counts per task",
                "measured": "off (--keep-training-data)" if args.keep_training_data else
                            "on: " + "; ".join(f"{m}: {training_table(m)[1]}" for m in models),
                "met": "no" if args.keep_training_data else "yes"}]
    if args.issue:
        summary = issue_rows(df, args.issue, models, tasks)
    write(args, "\n".join(lines) + "\n", summary)


def issue_rows(df: pd.DataFrame, issue: str, models: list[str], tasks: list[str]) -> list[dict]:
    """One summary row per model and per baseline (BLOSUM62 etc.), so a model's row is read beside them."""
    baselines = [m for m in df["model"].unique() if str(m).startswith("baseline:")]
    return [{"issue": issue, "target": f"downstream suite row for {m}", "measured": headline(df, m, tasks),
             "met": "baseline" if m in baselines else "reported (compare with the baseline rows)"}
            for m in baselines + models]


def headline(df: pd.DataFrame, model: str, tasks: list[str]) -> str:
    """The model's summary-table numbers as one line ("CATH acc 0.210, SF-Hit@10 0.396, ...")."""
    rows = df[(df["model"] == model) & (df["metric"] != "skipped")].set_index(["task", "metric"])["value"]
    return ", ".join(f"{label} {rows[(t, m)]:.3f}" for t, m, label in HEADLINE
                     if t in tasks and (t, m) in rows.index and not math.isnan(rows[(t, m)]))


def report_text(args: argparse.Namespace, done: list[str], models: list[str], parts: list[pd.DataFrame],
                wall: float, cpu: float) -> str:
    """The results section for the models finished so far (one merged table, as one run would write it)."""
    df = pd.concat(parts, ignore_index=True)
    ctx = Context(out=Path(args.out), data_dir=Path(args.data or "."), smoke=args.smoke,
                  heldout=Path(args.heldout) if args.heldout else None, pca_cap=args.pca_cap, fast=args.fast,
                  leakage=None if args.keep_training_data else Leakage.from_models(models))
    ctx.excluded = parts[0].attrs.get("excluded", {})
    table = markdown_report(df, ctx, done, resolve_tasks(args.tasks))
    per_model = df.groupby("model", sort=False)["seconds"].apply(
        lambda s: s.groupby(df.loc[s.index, "task"]).first().sum())
    lines = [
        f"## Downstream benchmark suite (issue {args.issue})" if args.issue else
        "## Downstream benchmark suite (issues 7, 18)", "",
        f"Command: `{' '.join(['python', *sys.argv])}`  ",
        f"Machine: {cpu_model()}; torch {torch.__version__}, {args.threads} torch thread(s); date {args.date}.  ",
        f"Load: {args.load}.  ",
        f"Total wall time: **{wall / 60:.1f} min** for {', '.join(done)}; CPU time of the process "
        f"{cpu / 60:.1f} min (wall > CPU / threads means other jobs shared the cores while measuring).  ",
        "Seconds per model (sum over tasks): " + ", ".join(f"{m} {s:.0f}" for m, s in per_model.items()) + ".", "",
        *([] if done == models else [f"**Partial: {len(done)} of {len(models)} models finished so far.**", ""]),
        table,
    ]
    return "\n".join(lines) + "\n"


def write(args: argparse.Namespace, text: str, summary: list[dict] | None) -> None:
    """Print the section; write it (and, at the end, the summary rows) unless this is a smoke run."""
    print(text, flush=True)
    if args.smoke:
        return
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report, text)
    if summary is not None:
        write_summary(report.with_suffix("").with_suffix(".summary.json"), summary)


if __name__ == "__main__":
    main()
