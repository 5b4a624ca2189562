"""Reduced precision vs fp32 on the trained protlens-small: how far bf16, fp16 and int8 linear
layers move embeddings and log-probabilities.

Real proteins (human kinases, at most the model's 512 residues) go through the model in fp32 (the
reference) and again with the weights and activations in bf16 and in fp16 (CPU here; fp16 runs
only for this measurement, since ``embed`` refuses it on CPU), and with the fp32 model's linear
layers in int8 (``--dtype int8``: the CPU mode for AVX2 machines without bf16 units). Reported:
per-residue and pooled relative L2 error of the last layer, cosine distance of pooled vectors, and
the mean absolute log-probability error weighted by the fp32 distribution; and the time of each
precision relative to fp32, all four run alternately (a ratio usable on a loaded machine).

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/precision.py

    python benchmarks/precision.py           # 40 proteins
    python benchmarks/precision.py --quick   # 8 proteins
"""

from __future__ import annotations

import copy
import datetime
import time
from pathlib import Path

import numpy as np
import torch

from _results import command, isa_env, machine, write
from window_stitching import protein_args, proteins


def run(model, seqs: list[str], int8: bool = False) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """(last-layer states, log-probabilities) of each protein's residues, one protein per pass; seconds."""
    from protlens.models import ESM_ALPHABET

    t0 = time.perf_counter()
    out = []
    with torch.inference_mode():
        for s in seqs:
            toks = torch.from_numpy(ESM_ALPHABET.batch([s])[0])
            o = model(toks, repr_layers=[-1], return_logits=True, int8=int8)
            out.append((o.hidden[model.num_layers][0, 1:-1].float().numpy(),
                        torch.log_softmax(o.logits[0, 1:-1].float(), -1).numpy()))
    return out, time.perf_counter() - t0


def main() -> None:
    args = protein_args(__doc__)
    from protlens.models import load_model

    model = load_model("protlens-small")
    seqs = proteins(Path(args.fasta), 8 if args.quick else args.n, model.max_residues)
    models = {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16),
              "fp16": copy.deepcopy(model).to(torch.float16), "int8": model}
    outs, secs = {}, {k: [] for k in models}
    for _ in range(2):  # alternate, so load hits every precision alike
        for k, m in models.items():
            outs[k], t = run(m, seqs, int8=k == "int8")
            secs[k].append(t)
    ref = outs["fp32"]
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["## Reduced precision vs fp32 on protlens-small (trained)", "",
             f"Command: `{command()}`; {started}; {machine()}. "
             "Errors do not depend on load; the time ratio is the fastest of 2 alternating rounds each (the load "
             "average at the start is in the machine line).", "",
             f"{len(seqs)} human kinases of {min(map(len, seqs))}-{max(map(len, seqs))} residues "
             f"({Path(args.fasta).name}), one per forward pass, last layer. Relative error = |x - x_fp32| / |x_fp32| "
             "(L2); log-prob error = sum_a p_fp32(a) |log p(a) - log p_fp32(a)| per residue. Mean (max) over "
             "residues or proteins.", "",
             "| dtype | per-residue rel. error | pooled rel. error | pooled cosine distance | log-prob error "
             "| time / fp32 time |",
             "|---|---|---|---|---|---|"]
    summary, isa = [], torch.backends.cpu.get_cpu_capability()
    for name in ("bf16", "fp16", "int8"):
        got = outs[name]
        slow = min(secs[name]) / min(secs["fp32"])
        res, pooled, cos, lp = [], [], [], []
        for (h0, l0), (h, lpr) in zip(ref, got):
            res.append(np.linalg.norm(h - h0, axis=1) / np.linalg.norm(h0, axis=1))
            a, b = h.mean(0).astype(np.float64), h0.mean(0).astype(np.float64)
            pooled.append(np.linalg.norm(a - b) / np.linalg.norm(b))
            cos.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            lp.append((np.exp(l0) * np.abs(lpr - l0)).sum(1))
        res, lp = np.concatenate(res), np.concatenate(lp)
        lines.append(f"| {name} | {res.mean():.4f} ({res.max():.4f}) | {np.mean(pooled):.4f} ({np.max(pooled):.4f}) "
                     f"| {np.mean(cos):.2e} ({np.max(cos):.2e}) | {lp.mean():.4f} ({lp.max():.4f}) | {slow:.2f} |")
        summary.append({"issue": "22" if name == "int8" else "17",
                        "target": f"{name} vs fp32 on protlens-small ({isa}): error reported",
                        "measured": f"per-residue {res.mean():.4f}, pooled {np.mean(pooled):.4f}, "
                                    f"log-prob {lp.mean():.4f}", "met": "reported"})
    lines += ["", "protlens refuses `--dtype fp16` on CPU: see the time column (and fp16's 5-bit exponent "
              "overflows past 65504 where bf16 does not). bf16 can only pay on CPUs with bf16 units (AMX, "
              "AVX512-BF16); int8 (linear layers only; attention, norms and the LM head stay fp32) needs only "
              "AVX2. The time column is for this run's CPU capability (header)."]
    print("\n".join(lines))
    write(f"precision_{isa.lower()}" if isa_env() else "precision", "\n".join(lines), summary)  # a capped ISA apart


if __name__ == "__main__":
    main()
