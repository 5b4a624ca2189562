"""Ray engine overhead: `protlens.pp.embed_ray` vs the local engine on the same CPU.

Both embed the same FASTA with the same random-init ESM-2 weights (mean over residues of the last
layer), each in its own fresh subprocess so neither profits from the other's imports or caches:

* local      -- ``protlens.pp.embed`` (torch uses every core of the machine);
* ray-cold   -- ``embed_ray`` as ``protlens embed --engine ray`` runs it: it starts a local Ray
                instance, ``--num-workers`` actors of one core each, and shuts Ray down;
* ray-warm   -- ``embed_ray`` on a Ray instance started beforehand (not timed), as with
                ``--address auto`` on a running cluster.

The timed span is the embedding call (model loading included) for all three. Results are checked
against the local engine's (max abs difference).

    python benchmarks/ray_overhead.py --truncate [--summary benchmarks/results/ray.summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_summary

ARCHS = {"8M": (6, 320, 20), "35M": (12, 480, 20)}
DEFAULT_FASTA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kinases" / "hs_sequences.fasta"
METHODS = ["local", "ray-cold", "ray-warm"]
TARGET_PCT = 15.0


def summary_rows(overhead: dict[str, float], n: int, arch: str) -> list[dict]:
    """BENCHMARKS.md's issue-8 row from the measured overheads (% vs local), so the headline is never typed by hand."""
    labels = {"ray-warm": ("on a running Ray instance", "warm"), "ray-cold": ("when the job starts Ray itself", "cold")}
    got = [(m, overhead[m]) for m in ("ray-warm", "ray-cold") if m in overhead]
    if not got:
        return []
    return [{"issue": "8 Ray", "target": f"Ray engine overhead vs local < {TARGET_PCT:g}%",
             "measured": "; ".join(f"{v:+.1f}% {labels[m][0]}" for m, v in got) + f" ({n} sequences, {arch})",
             "met": "; ".join(f"{labels[m][1]} {'yes' if v < TARGET_PCT else 'no'}" for m, v in got)}]


def make_model(arch: str, folder: Path) -> None:
    """A random-init ESM-2 of the given size, saved as an HF folder."""
    import torch
    from transformers import EsmForMaskedLM

    from protlens.models import EsmPLM, esm2_config

    torch.manual_seed(0)
    EsmPLM(EsmForMaskedLM(esm2_config(*ARCHS[arch])).eval(), f"esm2-{arch}-random", "benchmark").save_pretrained(folder)


def run_one(method: str, fasta: Path, model: Path, out: Path, args) -> None:
    """Child process: embed with one engine and save X plus the timing."""
    from protlens.io import read_sequences
    from protlens.pp import embed, embed_ray

    adata = read_sequences(fasta)
    if args.limit:
        adata = adata[: args.limit].copy()
    common = dict(truncate=args.truncate, max_tokens=args.max_tokens, progress=False)
    if method == "local":
        t0 = time.perf_counter()
        embed(adata, str(model), **common)
        seconds = time.perf_counter() - t0
    else:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if method == "ray-warm":
            ray.init(num_cpus=args.num_workers, include_dashboard=False, configure_logging=False)
        t0 = time.perf_counter()
        embed_ray(adata, str(model), num_workers=args.num_workers, shard_size=args.shard_size,
                  shard_dir=out.with_suffix(".shards"), **common)
        seconds = time.perf_counter() - t0
        if ray.is_initialized():
            ray.shutdown()
    np.save(out, np.asarray(adata.X, dtype=np.float32))
    info = adata.uns["embed"]
    out.with_suffix(".json").write_text(json.dumps({
        "seconds": seconds, "n": int(adata.n_obs), "residues": int(adata.obs["length"].clip(
            upper=1022 if args.truncate else None).sum()), "shards": int(info.get("n_shards", 0)),
        "shard_size": int(info.get("shard_size", 0))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    ap.add_argument("--arch", default="8M", choices=sorted(ARCHS))
    ap.add_argument("--num-workers", type=int, default=os.cpu_count())
    ap.add_argument("--shard-size", type=int, default=None, help="default: protlens' default_shard_size")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--truncate", action="store_true", help="first 1022 residues only (fair-esm style), to save time")
    ap.add_argument("--limit", type=int, default=0, help="first N sequences only")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--summary", type=Path, default=None, help="also write the summary row(s) of BENCHMARKS.md here")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, model, out = args.child
        run_one(method, args.fasta, Path(model), Path(out), args)
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(args.arch, tmp / "model")
        flags = [f"--fasta={args.fasta}", f"--arch={args.arch}", f"--num-workers={args.num_workers}",
                 f"--max-tokens={args.max_tokens}", f"--limit={args.limit}"]
        flags += ["--truncate"] * args.truncate + ([f"--shard-size={args.shard_size}"] if args.shard_size else [])
        for method in args.methods.split(","):
            out = tmp / f"{method}.npy"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, *flags, "--child", method, str(tmp / "model"), str(out)],
                           check=True)
            meta = json.loads(out.with_suffix(".json").read_text())
            rows.append((method, meta, time.perf_counter() - t0, np.load(out)))
    ref = rows[0][1]["seconds"] if rows[0][0] == "local" else None
    print(f"\n{rows[0][1]['n']} sequences, {rows[0][1]['residues']:,} residues embedded, ESM-2 {args.arch} "
          f"random init, truncate={args.truncate}, Ray workers={args.num_workers}\n")
    print("| engine | shards | embed s | process s | overhead vs local | max abs diff vs local |")
    print("|---|---:|---:|---:|---:|---:|")
    overhead = {method: 100 * (meta["seconds"] / ref - 1) for method, meta, _, _ in rows} if ref else {}
    for method, meta, wall, x in rows:
        over = f"{overhead[method]:+.1f}%" if ref else "n/a"
        diff = f"{np.abs(x - rows[0][3]).max():.1e}" if rows[0][0] == "local" else "n/a"
        shards = f"{meta['shards']} x {meta['shard_size']}" if meta["shards"] else "-"
        print(f"| {method} | {shards} | {meta['seconds']:.1f} | {wall:.1f} | {over} | {diff} |")

    if args.summary:
        write_summary(args.summary, summary_rows(overhead, rows[0][1]["n"], args.arch))


if __name__ == "__main__":
    main()
