"""Time to first result (issue 22): ``protlens --help`` and ``protlens embed`` on 10 sequences, whole process.

Every measurement is a fresh process timed from outside (wall clock from spawn to exit), repeated and
alternated between the methods so that load from other jobs falls on all of them alike; medians are
reported. Methods:

* ``--help`` of this tree's CLI, and of a baseline source tree when ``--baseline-src`` is given
  (e.g. ``git archive 775de65 src | tar -x -C /tmp/base``);
* ``embed``: ``protlens embed first10.fasta -o out.h5ad`` (the CLI, writing the .h5ad) against the
  careful HF loop of ``embed_throughput.py`` (length-sorted 4096-token batches, SDPA) run as its own
  script that reads the FASTA and saves the pooled embeddings with NumPy; both use the same random-init
  ESM-2 weights (fair-esm .pt converted to an HF folder);
* per-module import times from ``python -X importtime -c "import protlens.cli"`` (this tree and baseline).

    python benchmarks/startup.py --baseline-src /tmp/base/src --repeats 5
    python benchmarks/startup.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from _results import write_summary, write_text_atomic

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
DEFAULT_FASTA = HERE.parents[1] / "shared" / "data" / "kinases" / "hs_sequences.fasta"
RESULTS = HERE / "results"


def read_fasta(path: Path, limit: int) -> list[tuple[str, str]]:
    """First ``limit`` records, parsed without protlens (the HF script must not pay for protlens' imports)."""
    recs: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if len(recs) == limit:
                break
            recs.append((line[1:].split()[0], []))
        elif recs:
            recs[-1][1].append(line.strip())
    return [(name, "".join(parts)) for name, parts in recs]


def hf_child(folder: Path, fasta: Path, out: Path) -> None:
    """What a careful user writes: read the FASTA, embed with the careful HF loop, save the array."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from embed_throughput import run_hf

    np.save(out, run_hf(folder, read_fasta(fasta, 10**9), careful=True, device="cpu", dtype="fp32"))


def timed(cmd: list[str], src: Path, cwd: Path, cpu: dict[str, list[float]], key: str) -> float:
    """Wall seconds of one process from spawn to exit, with ``src`` first on the import path.

    Its CPU seconds (user + system, from ``RUSAGE_CHILDREN``) go to ``cpu[key]``: under load from other
    jobs they are the better guide to what an idle machine would show.
    """
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    cpu.setdefault(key, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return dt


def import_times(src: Path, module: str = "protlens.cli") -> tuple[float, list[tuple[str, float]]]:
    """(seconds to import ``module``, [(top-level package, cumulative seconds)]) from ``-X importtime``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env,
                          capture_output=True, text=True)
    top: dict[str, float] = {}
    total = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if name == module:
            total = int(cumulative) / 1e6
        root = name.split(".")[0]
        top[root] = max(top.get(root, 0.0), int(cumulative) / 1e6)
    return total, sorted(top.items(), key=lambda kv: -kv[1])


def machine() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline-src", type=Path, default=None, help="src/ folder of the tree to compare against")
    p.add_argument("--arch", default="8M")
    p.add_argument("--quick", action="store_true", help="2 repeats (a smoke run; not for the results file)")
    p.add_argument("--load", default="", help="load conditions, written into the results")
    p.add_argument("--out", type=Path, default=RESULTS / "startup.md")
    p.add_argument("--hf-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.hf_child:
        return hf_child(*map(Path, args.hf_child))
    if not args.fasta.exists():
        sys.exit(f"skipped: {args.fasta} not found")
    repeats = 2 if args.quick else args.repeats
    trees = {"this tree": SRC} | ({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})
    py = sys.executable
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(HERE))
        from embed_throughput import make_models

        make_models(args.arch, tmp)
        fasta = tmp / "first10.fasta"
        recs = read_fasta(args.fasta, 10)
        fasta.write_text("".join(f">{name}\n{seq}\n" for name, seq in recs))
        residues = sum(min(len(s), 1022) for _, s in recs)
        embed = [py, "-m", "protlens", "embed", str(fasta), "-o", "out.h5ad", "--model", str(tmp / "hf"),
                 "--truncate", "--no-progress", "--checkpoint-every", "0"]
        for r in range(repeats):
            for name, src in trees.items():
                key = f"--help ({name})"
                times.setdefault(key, []).append(timed([py, "-m", "protlens", "--help"], src, tmp, cpu, key))
            for name, src in trees.items():
                (tmp / "out.h5ad").unlink(missing_ok=True)
                key = f"embed 10 ({name})"
                times.setdefault(key, []).append(timed(embed, src, tmp, cpu, key))
                key = "embed 10 (careful HF loop)"
                times.setdefault(key, []).append(
                    timed([py, __file__, "--hf-child", str(tmp), str(fasta), str(tmp / "hf.npy")], SRC, tmp, cpu, key))
            print(json.dumps({k: round(v[-1], 2) for k, v in times.items()}), flush=True)
    load1 = os.getloadavg()[0]
    imports = {name: import_times(src) for name, src in trees.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    hf = med["embed 10 (careful HF loop)"]
    lines = [
        "## Time to first result: `protlens --help` and `protlens embed` on 10 sequences (issue 22)", "",
        f"Command: `python benchmarks/startup.py{' --baseline-src ' + str(args.baseline_src) if args.baseline_src else ''}"
        f" --repeats {repeats}` ({started}). Machine: {machine()}.",
        f"Load: {args.load or 'not stated'}; 1-min load average {load0:.1f} at the start, {load1:.1f} at the end. "
        "Absolute times are inflated by that load; the ratios are between runs alternated in the same loop.", "",
        f"Embedding input: the first 10 kinases of `{args.fasta.name}` ({residues:,} residues after truncation "
        f"at 1022), random-init ESM-2 {args.arch}, fp32, whole process from spawn to exit (the protlens CLI "
        "writes an .h5ad; the careful HF loop script saves a .npy). Median of "
        f"{repeats} runs (all runs in brackets).", "",
        "| what | median wall s | median CPU s | wall of each run (s) |", "|---|---|---|---|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.2f} | {statistics.median(cpu[k]):.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    lines.append("")
    for name in trees:
        lines.append(f"- `protlens embed` ({name}) / careful HF loop, whole process: "
                     f"{med[f'embed 10 ({name})'] / hf:.2f}x the time")
    lines += ["", "Import time of `import protlens.cli` (`python -X importtime`, one run each, cumulative "
              "seconds of the largest top-level packages):", ""]
    names = list(trees)
    lines += ["| package | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    shown = {pkg for name in names for pkg, _ in imports[name][1][:8]}
    rows = sorted(shown, key=lambda pkg: -max(dict(imports[n][1]).get(pkg, 0.0) for n in names))
    for pkg in rows:
        lines.append(f"| {pkg} | " + " | ".join(f"{dict(imports[n][1]).get(pkg, 0.0):.3f}" if pkg in dict(imports[n][1])
                                                 else "not imported" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{imports[n][0]:.3f}**" for n in names) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.quick:
        return
    write_text_atomic(args.out, text)
    this_help, this_embed = med["--help (this tree)"], med["embed 10 (this tree)"]
    help_cpu = statistics.median(cpu["--help (this tree)"])
    summary = [
        {"issue": "22", "target": "protlens --help under 1 s", "measured": f"{this_help:.2f} s wall, {help_cpu:.2f} s CPU "
         f"(median of {repeats}, under load {load0:.0f}-{load1:.0f} on {os.cpu_count()} CPUs)",
         "met": "yes" if this_help < 1 else f"no (wall, under load); CPU {help_cpu:.2f} s"},
        {"issue": "22", "target": "protlens embed on 10 sequences, whole process, no slower than the careful HF loop",
         "measured": f"{this_embed:.2f} s vs {hf:.2f} s ({this_embed / hf:.2f}x the time; median of {repeats}, "
         "alternated, under load)", "met": "yes" if this_embed <= hf else "no"},
    ]
    write_summary(args.out.with_suffix(".summary.json"), summary)


if __name__ == "__main__":
    main()
