"""What keeping training data out of the benchmark changes: scores before / after, items excluded per task.

    python benchmarks/exclusion_effect.py --after DIR --before DIR [--data ../shared/data]
        [--out benchmarks/results/exclusion_effect.md]

``--after``: the ``--out`` folder of a ``benchmarks/bench_suite.py`` run with exclusion on (default);
``--before``: one with ``--keep-training-data`` (e.g. only the trained models, only the filtered tasks).
Both hold ``model*/results.csv``. The items excluded per pool are recomputed here from the data and
the trained models' ``training_set.tsv.gz`` (protlens.bench.leakage), independently of either run.
Writes a results section and ``<out>.summary.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from protlens.bench import ece, homology
from protlens.bench._common import Context, cath_domains, enzyme_subset
from protlens.bench.leakage import TASK_POOLS, Leakage, training_table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_suite import before_after, cpu_model  # noqa: E402  (a sibling benchmark script)
from _results import write_summary, write_text_atomic  # noqa: E402  (a sibling benchmark module)


def read_runs(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("model*/results.csv")) + sorted(folder.glob("results.csv"))
    if not files:
        raise SystemExit(f"exclusion_effect: no results.csv under {folder}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def excluded_counts(models: list[str], data: Path) -> dict[str, tuple[int, int]]:
    """(removed, kept) per pool, rebuilt with the default subsample settings."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(out=Path(tmp), data_dir=data, leakage=Leakage.from_models(models))
        enzyme_subset(ctx)
        cath_domains(ctx)
        homology.scop_set(ctx)
        ece.heldout_split(ctx)
        return dict(ctx.excluded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "exclusion_effect.md")
    ap.add_argument("--load", default="not recorded")
    args = ap.parse_args()
    after, before = read_runs(args.after), read_runs(args.before)
    trained = [m for m in dict.fromkeys(before["model"]) if training_table(m)[0] is not None]
    if not trained:
        raise SystemExit("exclusion_effect: no model of the --before run carries training metadata")
    counts = excluded_counts(trained, args.data)
    lines = [
        "## Leakage: scores before / after excluding training data (issue 18)", "",
        f"Command: `{' '.join(['python', *sys.argv])}`  ",
        f"Machine: {cpu_model()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load: {args.load}.  ",
        f"Inputs: `benchmarks/bench_suite.py` runs in `{args.after}` (exclusion on) and `{args.before}` "
        "(`--keep-training-data`), otherwise the same settings (probes on all dimensions, mutation subsampling "
        "as given to the runs).", "",
        "Items excluded (training proteins of " + ", ".join(trained) + ") per task, before subsampling:", "",
        "| task | pool | items excluded | items left |", "|---|---|---|---|",
    ]
    for task, pools in TASK_POOLS.items():
        for p in pools:
            removed, kept = counts.get(p, (0, "–"))
            lines.append(f"| {task} | {p} | {removed} | {kept} |")
    lines += ["", "Without exclusion the ECE held-out set is a seeded 10% of the corpus (training sequences "
              "included); with it, the model's own `ece_holdout` split.", "",
              *before_after(after, before, trained), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    key = ["model", "task", "metric"]
    a, b = after.set_index(key)["value"], before.set_index(key)["value"]
    rows = []
    for m in trained:
        for t, metric in (("family", "cath_acc"), ("homology", "sf_hit10"), ("family", "ec3_acc")):
            if (m, t, metric) in a.index and (m, t, metric) in b.index:
                rows.append(f"{m} {t}/{metric} {b[(m, t, metric)]:.3f} -> {a[(m, t, metric)]:.3f}")
    summary = [{"issue": "18 leakage", "target": "per task, items excluded and the score before / after exclusion",
                "measured": "; ".join(rows) + f" (cath pool: {counts.get('cath', (0, 0))[0]} training domains excluded)",
                "met": "measured (shipped protlens-small only: the 600-step graph/MLM pair's weights are not in the "
                       "repository)"}]
    write_summary(args.out.with_suffix("").with_suffix(".summary.json"), summary)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
