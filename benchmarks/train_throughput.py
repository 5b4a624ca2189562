"""Training throughput: protlens trainer (mlm, mlm+graph) vs a plain HF EsmForMaskedLM MLM loop.

Same architecture, same corpus, same token-budget batches (the protlens step plan), fp32 on CPU
(bf16 autocast on GPU for protlens). Each variant runs in its own subprocess so peak memory (max RSS
on CPU, max allocated on GPU) is its own; variants are repeated in interleaved order to spread
machine-load drift over all of them. Reports residue+BOS/EOS tokens per second over the timed steps
(after warm-up) and the graph-loss overhead relative to MLM alone.

    python benchmarks/train_throughput.py --data ../shared/data/pretrain/corpus.tsv --layers 6 --hidden 320 \
        --heads 20 --max-tokens 4096 --steps 10 --warmup 2 --repeats 2 \
        [--summary benchmarks/results/train.summary.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_summary

TARGET_PCT = 10.0


def summary_rows(graph_time_pct: float, graph_mem_pct: float, hf_pct: float) -> list[dict]:
    """BENCHMARKS.md's issue-5 row from the measured overheads (%), so the headline is never typed by hand."""
    return [{"issue": "5 training", "target": f"graph-loss overhead < {TARGET_PCT:g}% time",
             "measured": f"graph loss {graph_time_pct:+.1f}% time per token, {graph_mem_pct:+.1f}% peak memory; "
                         f"protlens mlm vs plain HF loop {hf_pct:+.1f}% time per token",
             "met": "yes" if graph_time_pct < TARGET_PCT else "no"}]


def child(args: argparse.Namespace) -> dict:
    from protlens.train.config import TrainConfig
    from protlens.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data=args.data, out_dir=tmp, num_layers=args.layers, hidden_size=args.hidden,
                          num_heads=args.heads, crop=args.crop, max_tokens=args.max_tokens, lr=1e-4, progress=False,
                          objective="mlm" if args.variant == "hf-mlm" else args.variant, threads=args.threads,
                          eval_max_seqs=1, seed=0)
        tr = Trainer(cfg)
        from protlens.train.data import plan_epoch

        plan = plan_epoch(tr.train_lengths, tr.tokens_per_step, 1, 0, 0)[: args.warmup + args.steps]
        dev = tr.acc.device
        if args.variant == "hf-mlm":
            hf = tr.module.hf
            opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

            def step(i):
                b = tr.collator(plan[i], (0, 0, i)).to(dev)
                loss = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return b.n_tokens
        else:
            def step(i):
                return tr.train_step(plan[i], (0, 0, i))["tokens"]

        for i in range(args.warmup):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, toks = time.perf_counter(), 0
        for i in range(args.warmup, len(plan)):
            toks += step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"variant": args.variant, "tokens_per_s": toks / dt, "s_per_step": dt / args.steps, "peak_mib": mem,
                "device": str(dev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary", type=Path, default=None, help="also write the summary row(s) of BENCHMARKS.md here")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    variants = ["hf-mlm", "mlm", "mlm+graph"]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", v]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[v].append(json.loads(out))
    print(f"model {args.layers}x{args.hidden} ({args.heads} heads), crop {args.crop}, {args.max_tokens} padded tokens/step, "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.repeats} repeats, {args.threads} thread(s), "
          f"device {results['mlm'][0]['device']}")
    print("| variant | tokens/s (median) | s/step | peak memory MiB |")
    print("|---|---|---|---|")
    med = {}
    for v in variants:
        tps = np.median([x["tokens_per_s"] for x in results[v]])
        med[v] = tps
        print(f"| {v} | {tps:.0f} | {np.median([x['s_per_step'] for x in results[v]]):.2f} | "
              f"{np.median([x['peak_mib'] for x in results[v]]):.0f} |")
    mem = {v: np.median([x["peak_mib"] for x in results[v]]) for v in variants}
    hf_pct = 100 * (med["hf-mlm"] / med["mlm"] - 1)
    graph_time_pct, graph_mem_pct = 100 * (med["mlm"] / med["mlm+graph"] - 1), 100 * (mem["mlm+graph"] / mem["mlm"] - 1)
    print(f"\nprotlens mlm vs plain HF loop: {hf_pct:+.1f}% time per token")
    print(f"graph loss overhead (mlm+graph vs mlm): {graph_time_pct:+.1f}% time per token, "
          f"{graph_mem_pct:+.1f}% peak memory")
    if args.summary:
        write_summary(args.summary, summary_rows(graph_time_pct, graph_mem_pct, hf_pct))


if __name__ == "__main__":
    main()
