"""Where the time of an ESM-2 forward goes on this CPU: protlens vs the careful HF loop (issue 22, item 1).

Both embed the same sequences with the same random-init ESM-2 weights under ``torch.profiler`` (CPU);
the self CPU time of every aten op is put in one category (GEMM, attention (SDPA), elementwise and
normalisation, copies and layout, other ops), and what the profiler does not attribute to any op
(wall time of the forward minus the op self times, i.e. Python, dispatch and idle) is its own row.
Padding is counted from the batch shapes each method built. Profiling adds overhead per op, so the
shares matter more than the totals.

    python benchmarks/profile_avx2.py --arch 8M --arch 35M --limit 40
    python benchmarks/profile_avx2.py --quick
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/profile_avx2.py --arch 8M --append
        # an AVX2-only CPU's kernels on an AVX-512 machine (torch's and oneDNN's own switches)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FASTA = HERE.parents[1] / "shared" / "data" / "kinases" / "hs_sequences.fasta"

CATEGORIES = [
    ("GEMM", ("addmm", "aten::mm", "bmm", "matmul", "linear", "baddbmm", "mkldnn_linear", "onednn")),
    ("attention (SDPA)", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")),
    ("elementwise and normalisation", ("add", "mul", "div", "gelu", "layer_norm", "rsqrt", "sub", "where", "masked_fill",
                                       "cos", "sin", "neg", "pow", "mean", "sum", "exp", "tanh", "erf", "eq", "ne",
                                       "embedding")),
    ("copies and layout", ("copy_", "contiguous", "clone", "cat", "stack", "index", "to", "_to_copy", "empty",
                           "zeros", "fill_", "pad", "constant_pad", "split", "chunk", "narrow", "slice", "select",
                           "gather", "scatter", "repeat", "expand", "view", "reshape", "transpose", "permute",
                           "unsqueeze", "squeeze", "as_strided", "t", "detach", "resize_", "unbind", "arange")),
]


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other ops"


def profile(fn) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """(wall seconds, self CPU seconds per category, top ops) of ``fn()`` under the CPU profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    cats: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::") and not evt.key.startswith(("mkldnn", "onednn")):
            continue
        cats[category(evt.key)] += evt.self_cpu_time_total / 1e6
        ops[evt.key] += evt.self_cpu_time_total / 1e6
    return wall, dict(cats), sorted(ops.items(), key=lambda kv: -kv[1])[:8]


def padding_of(batches: list[list[int]], lengths: list[int]) -> tuple[int, int]:
    """(real tokens, padded tokens) of length-padded batches (+2 for the BOS/EOS tokens)."""
    real = sum(lengths[i] + 2 for b in batches for i in b)
    padded = sum(len(b) * (max(lengths[i] for i in b) + 2) for b in batches)
    return real, padded


def careful_batches(lengths: list[int]) -> list[list[int]]:
    """The careful HF loop's batches (embed_throughput.run_hf): length-sorted, 4096 padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and (lengths[cur[0]] + 2) * (len(cur) + 1) > 4096:
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + [cur]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    p.add_argument("--arch", action="append", choices=["8M", "35M", "150M"])
    p.add_argument("--limit", type=int, default=40, help="first N sequences")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="8M on 8 sequences, printed only")
    p.add_argument("--load", default="not stated", help="load conditions, written into the results")
    p.add_argument("--out", type=Path, default=HERE / "results" / "profile_avx2.md")
    p.add_argument("--append", action="store_true", help="add this run's section to --out instead of replacing it")
    args = p.parse_args()
    if not args.fasta.exists():
        sys.exit(f"skipped: {args.fasta} not found")
    import torch

    sys.path.insert(0, str(HERE))
    from _results import command, isa_env, write_text_atomic
    from embed_throughput import make_models, read_fasta, run_hf
    from startup import machine

    from protlens.models import load_model
    from protlens.pp import embed_sequences, plan_batches

    if args.threads:
        torch.set_num_threads(args.threads)
    archs, limit = (["8M"], 8) if args.quick else (args.arch or ["8M", "35M"], args.limit)
    recs = read_fasta(args.fasta, limit)
    seqs = [s[:1022] for _, s in recs]
    lengths = [len(s) for s in seqs]
    load0 = os.getloadavg()[0]
    caps = isa_env()
    lines = ["## Where the ESM-2 forward spends its time on this CPU (issue 22, item 1)"
             + (f", kernels limited by {caps}" if caps else ""), "",
             f"Command: `{command()}` "
             f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}). Machine: {machine()} "
             f"({platform.machine()}, torch threads {torch.get_num_threads()}).",
             f"Load: {args.load}; 1-min load average {load0:.1f} at the start. Input: the first {limit} kinases "
             f"of `{args.fasta.name}` truncated at 1022 ({sum(lengths):,} residues), random-init weights, fp32. "
             "Self CPU time per op category under `torch.profiler` (summed over threads, so it can exceed wall "
             "time); 'not in any op' = wall x threads - op self time (Python, dispatch, waiting for a core under "
             "load). The profiler's own cost per op inflates small-op categories.", ""]
    for arch in archs:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_models(arch, folder)
            model = load_model(folder / "hf")
            result = {}
            runs = {
                "protlens": lambda: result.update(res=embed_sequences(model, seqs, truncate=True, progress=False)),
                "careful HF loop": lambda: run_hf(folder, recs, careful=True, device="cpu", dtype="fp32"),
            }
            for fn in runs.values():  # warm-up: first-call allocations and oneDNN primitive creation
                fn()
            results = {name: profile(fn) for name, fn in runs.items()}
        threads = torch.get_num_threads()
        cats = [c for c, _ in CATEGORIES] + ["other ops"]
        lines += [f"### ESM-2 {arch}", "", "| category | " + " | ".join(f"{n} s (share)" for n in results) + " |",
                  "|---|" + "---|" * len(results)]
        for cat in cats + ["not in any op"]:
            cells = []
            for wall, by_cat, _ in results.values():
                budget = wall * threads
                v = max(budget - sum(by_cat.values()), 0.0) if cat == "not in any op" else by_cat.get(cat, 0.0)
                cells.append(f"{v:.2f} ({v / budget:.0%})")
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        lines.append("| **wall** | " + " | ".join(f"**{w:.2f}**" for w, _, _ in results.values()) + " |")
        lines.append("")
        for name, (_, _, top) in results.items():
            lines.append(f"- {name}, largest ops: " + ", ".join(f"`{k}` {v:.2f} s" for k, v in top))
        budget = result["res"].max_tokens
        plan = plan_batches(lengths, 1022, 0, budget, truncate=True)
        for name, (batches, widths) in {
            "careful HF loop (4096-token batches)": (careful_batches(lengths), lengths),
            f"protlens ({budget}-token batches)": (plan.batches, [c.end - c.start for c in plan.chunks]),
        }.items():
            real, padded = padding_of(batches, widths)
            lines.append(f"- {name}: {len(batches)} batches, {padded / real - 1:.1%} padding over {real:,} real tokens.")
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        old = args.out.read_text() + "\n" if args.append and args.out.exists() else ""
        write_text_atomic(args.out, old + text)


if __name__ == "__main__":
    main()
