"""How close protlens' CPU forward pass is to the floor set by PyTorch's own fp32 kernels.

For the batches protlens plans on the benchmark input, this times (1) protlens' whole forward pass
and (2) only the calls no fp32 implementation on PyTorch can skip: the four linear layers of every
transformer layer (GEMM with bias; GELU and residual adds not counted) and the SDPA attention
kernel, on the same shapes and weights. (2) is a lower bound on any fp32 forward
built from these kernels; dividing another loop's measured time by it bounds the speed-up any
such implementation can reach over that loop.

    python benchmarks/embed_ceiling.py --arch 35M
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from embed_throughput import ARCHS, DEFAULT_FASTA, read_fasta
from protlens.models import EsmPLM, esm2_config
from protlens.pp._embed import DEFAULT_MAX_TOKENS, plan_batches


def kernel_floor(model: EsmPLM, batch: int, width: int) -> float:
    """Seconds of the unavoidable GEMM + SDPA calls of one forward pass over a [batch, width] input."""
    D, H = model.hidden_size, model.num_heads
    x = torch.randn(batch, width, D)
    fused = model._fused_qkv()
    t = 0.0
    for i, layer in enumerate(model.net.esm.encoder.layer):
        t0 = time.perf_counter()
        qkv = F.linear(x, *fused[i])
        t += time.perf_counter() - t0
        q, k, v = qkv.view(batch, width, 3, H, D // H).permute(2, 0, 3, 1, 4).contiguous()
        t0 = time.perf_counter()
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(batch, width, D)
        y = layer.attention.output.dense(a)
        layer.output.dense(layer.intermediate.dense(y))
        t += time.perf_counter() - t0
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=list(ARCHS), default="35M")
    p.add_argument("--fasta", type=str, default=str(DEFAULT_FASTA))
    p.add_argument("--limit", type=int, default=None, help="first N sequences only")
    args = p.parse_args()

    from transformers import EsmForMaskedLM

    torch.manual_seed(0)
    layers, dim, heads = ARCHS[args.arch]
    model = EsmPLM(EsmForMaskedLM(esm2_config(layers, dim, heads)).eval(), f"esm2-{args.arch}-random", "random")
    recs = read_fasta(args.fasta, args.limit)
    seqs = [s for _, s in recs]
    plan = plan_batches([len(s) for s in seqs], model.max_residues, 0, DEFAULT_MAX_TOKENS["cpu"], truncate=True)
    residues = sum(c.end - c.start for c in plan.chunks)
    forward = floor = 0.0
    with torch.inference_mode():
        for b in plan.batches:
            pieces = [seqs[plan.chunks[c].seq][plan.chunks[c].start : plan.chunks[c].end] for c in b]
            toks = torch.from_numpy(model.alphabet.batch(pieces)[0])
            t0 = time.perf_counter()
            model(toks, repr_layers=[-1])
            forward += time.perf_counter() - t0
            floor += kernel_floor(model, *toks.shape)
    print(f"ESM-2 {args.arch}, {len(seqs)} sequences, {residues:,} residues (truncated at {model.max_residues}), "
          f"{len(plan.batches)} batches of <= {DEFAULT_MAX_TOKENS['cpu']} tokens, {torch.get_num_threads()} threads")
    print(f"protlens forward: {forward:.1f} s ({residues / forward:,.0f} residues/s)")
    print(f"GEMM + SDPA floor: {floor:.1f} s ({residues / floor:,.0f} residues/s); "
          f"protlens spends {floor / forward:.0%} of its forward time in these kernels")


if __name__ == "__main__":
    main()
