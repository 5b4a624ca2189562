"""Embedding throughput: protlens vs fair-esm's extraction loop vs plain and careful HF loops.

Every method embeds the same FASTA with the same random-init ESM-2 (or, with ``--layout esm1b``,
ESM-1b: learned positions, embedding layer norm) weights (mean over residues of
the last layer, sequences truncated to 1022 residues as fair-esm's extract.py does) in its own
subprocess, so peak RSS is measured per method. protlens' windowed mode (no truncation) is
reported on its own line. Outputs are checked against each other (max abs difference).

    python benchmarks/embed_throughput.py --arch 8M --arch 35M
    python benchmarks/embed_throughput.py --arch 35M --device cuda --dtype bf16 --hf-dtype bf16
    python benchmarks/embed_throughput.py --layout esm1b --arch 8M --methods hf-careful,protlens --repeats 3 \
        --out embed_esm1b
    python benchmarks/embed_throughput.py --quick --layout esm1b   # 40 sequences, 8M, 3 alternating rounds
    python benchmarks/embed_throughput.py --arch 35M --methods hf-careful,protlens --dtype int8 --out embed_int8

``--repeats N`` runs the methods round-robin N times (each in a fresh subprocess) and reports the
median time per method, so that a ratio of two methods measured on a loaded machine stays usable.
``--out NAME`` also writes the tables to ``benchmarks/results/NAME.md``.

On an accelerator fair-esm stays in fp32 (its script has no other mode), ``--dtype`` sets protlens'
precision and ``--hf-dtype`` the HF loops'; peak accelerator memory and the model FLOP rate as a
fraction of a measured large-matmul peak (same device and dtype as protlens) are printed too.
``--dtype int8`` (CPU) runs protlens' linear layers in int8 beside fp32 loops: its pooled error
against the reference method is printed with its speed, and its summary row is a line of its own
(not the fp32 target).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARCHS = {"8M": (6, 320, 20), "35M": (12, 480, 20), "150M": (30, 640, 20), "650M": (33, 1280, 20)}
DEFAULT_FASTA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kinases" / "hs_sequences.fasta"
METHODS = ["fair-esm", "hf-plain", "hf-careful", "protlens", "protlens-windowed"]


def read_fasta(path: Path, limit: int | None) -> list[tuple[str, str]]:
    from protlens.io import read_sequences

    a = read_sequences(path)
    recs = list(zip(a.obs_names, a.obs["sequence"]))
    return recs[:limit] if limit else recs


def make_models(arch: str, folder: Path, layout: str = "esm2") -> None:
    """One random-init ESM-2 or ESM-1b: a fair-esm .pt and the same weights as an HF folder."""
    import argparse as ap

    import esm
    import torch

    from protlens.models import load_model

    layers, dim, heads = ARCHS[arch]
    torch.manual_seed(0)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    if layout == "esm1b":
        args = ap.Namespace(arch="roberta_large", layers=layers, embed_dim=dim, ffn_embed_dim=4 * dim,
                            attention_heads=heads, max_positions=1024, emb_layer_norm_before=True, token_dropout=True)
        model = esm.model.esm1.ProteinBertModel(args, alphabet)
        saved = ap.Namespace(arch="roberta_large", encoder_layers=layers, encoder_embed_dim=dim,
                             encoder_ffn_embed_dim=4 * dim, encoder_attention_heads=heads, max_positions=1024,
                             token_dropout=True)
        state = {("encoder." if k.startswith("lm_head") else "encoder.sentence_encoder.") + k: v
                 for k, v in model.state_dict().items() if not k.startswith("contact_head")}
        torch.save({"model": state, "args": saved}, folder / "model.pt")
    else:
        model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet,
                                    token_dropout=True)
        cfg = ap.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                           token_dropout=True)
        torch.save({"model": {"encoder." + k: v for k, v in model.state_dict().items()}, "cfg": {"model": cfg}},
                   folder / "model.pt")
    load_model(folder / "model.pt").save_pretrained(folder / "hf")


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: protlens' precisions: the above, and int8 linear layers on an fp32 model (CPU)
PROTLENS_DTYPES = [*DTYPES, "int8"]


def peak_dtype(dtype: str) -> str:
    """The precision of the matmul peak protlens in ``dtype`` is measured against (int8 keeps an fp32 model)."""
    return "fp32" if dtype == "int8" else dtype


def forward_flops(lengths, arch: str) -> float:
    """Model FLOPs of one forward pass (matmuls only: 2 per multiply-add) over sequences of ``lengths``."""
    layers, dim, _ = ARCHS[arch]
    per_layer = sum(2 * (n + 2) * (4 * dim * dim + 8 * dim * dim) + 4 * (n + 2) ** 2 * dim for n in lengths)
    return layers * per_layer


def matmul_peak(device: str, dtype: str) -> float:
    """Measured FLOP/s of large square matmuls on ``device`` in ``dtype`` (the attainable peak)."""
    import torch

    n = 8192 if device != "cpu" else 2048
    a = torch.randn(n, n, device=device, dtype=getattr(torch, DTYPES[dtype]))
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device != "cpu" else 5
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def reduced_precision_errors(emb: np.ndarray, ref: np.ndarray, dtype: str, ref_name: str) -> str:
    """Pooled relative L2 error and cosine distance of protlens in ``dtype`` against ``ref_name`` (one line)."""
    rel = np.linalg.norm(emb - ref, axis=1) / np.linalg.norm(ref, axis=1)
    cos = 1 - (emb * ref).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
    return (f"protlens {dtype} vs {ref_name}: pooled relative L2 error mean {rel.mean():.4f}, max "
            f"{rel.max():.4f}; cosine distance mean {cos.mean():.1e}, max {cos.max():.1e}")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_fairesm(folder: Path, recs, layers: int, device: str, layout: str = "esm2") -> np.ndarray:
    """fair-esm's extract.py loop, driven through the package's own API."""
    import esm
    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    # fair-esm picks its loader by name: esm2* reads ``cfg``, anything else the ESM-1b ``args``
    model, alphabet = esm.pretrained.load_model_and_alphabet_core(f"{layout}_random", data)
    model.eval().to(device)
    dataset = esm.data.FastaBatchedDataset([r[0] for r in recs], [r[1] for r in recs])
    batches = dataset.get_batch_indices(4096, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(1022), batch_sampler=batches)
    out = {}
    with torch.no_grad():
        for labels, strs, toks in loader:
            rep = model(toks.to(device), repr_layers=[layers])["representations"][layers]
            for i, label in enumerate(labels):
                n = min(1022, len(strs[i]))
                out[label] = rep[i, 1 : n + 1].mean(0).cpu().numpy()
    return np.stack([out[r[0]] for r in recs])


def run_hf(folder: Path, recs, careful: bool, device: str, dtype: str) -> np.ndarray:
    """Plain: batches of 8 in file order padded to the longest. Careful: length-sorted 4096-token batches, SDPA."""
    import torch
    from transformers import EsmModel, EsmTokenizer

    tok = EsmTokenizer(str(folder / "hf" / "vocab.txt"))
    impl = "sdpa" if careful else "eager"
    model = EsmModel.from_pretrained(folder / "hf", add_pooling_layer=False, attn_implementation=impl,
                                     dtype=getattr(torch, DTYPES[dtype])).eval().to(device)
    seqs = [r[1][:1022] for r in recs]
    if careful:
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        batches, cur = [], []
        for i in order:
            if cur and (len(seqs[cur[0]]) + 2) * (len(cur) + 1) > 4096:
                batches.append(cur)
                cur = []
            cur.append(i)
        batches.append(cur)
    else:
        batches = [list(range(i, min(i + 8, len(seqs)))) for i in range(0, len(seqs), 8)]
    out = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for b in batches:
            enc = tok([seqs[i] for i in b], return_tensors="pt", padding=True).to(device)
            h = model(**enc).last_hidden_state.float()
            m = enc["attention_mask"].clone()
            m[:, 0] = 0
            m[torch.arange(len(b)), enc["attention_mask"].sum(1) - 1] = 0
            pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
            out[b] = pooled.cpu().numpy()
    return out


def run_protlens(folder: Path, recs, windowed: bool, device: str, dtype: str) -> np.ndarray:
    from protlens.models import load_model
    from protlens.pp import embed_sequences

    model = load_model(folder / "hf")
    res = embed_sequences(model, [r[1] for r in recs], truncate=not windowed, device=device, dtype=dtype,
                          progress=False)
    return res.pooled[model.num_layers]


def child(args) -> None:
    folder = Path(args.folder)
    recs = read_fasta(Path(args.fasta), args.limit)
    layers = ARCHS[args.arch][0]
    t0 = time.perf_counter()
    if args.method == "fair-esm":
        emb = run_fairesm(folder, recs, layers, args.device, args.layout)
    elif args.method.startswith("hf-"):
        emb = run_hf(folder, recs, careful=args.method == "hf-careful", device=args.device, dtype=args.hf_dtype)
    else:
        emb = run_protlens(folder, recs, windowed=args.method == "protlens-windowed", device=args.device,
                           dtype=args.dtype)
    _sync(args.device)
    dt = time.perf_counter() - t0
    lengths = [len(r[1]) if args.method == "protlens-windowed" else min(len(r[1]), 1022) for r in recs]
    np.save(folder / f"emb-{args.method}.npy", emb)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"seconds": dt, "residues": sum(lengths), "rss_mb": rss}
    if args.device.startswith("cuda"):
        import torch

        row["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.method == "protlens":
        row["flops"] = forward_flops(lengths, args.arch)
        row["peak_flops"] = matmul_peak(args.device, peak_dtype(args.dtype))
    print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", default=str(DEFAULT_FASTA))
    p.add_argument("--arch", action="append", choices=list(ARCHS))
    p.add_argument("--layout", default="esm2", choices=["esm2", "esm1b"],
                   help="esm2 (rotary) or esm1b (learned positions + embedding layer norm, as ESM-1b/ESM-1v)")
    p.add_argument("--limit", type=int, default=None, help="first N sequences only")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=1, help="round-robin rounds; medians are reported")
    p.add_argument("--quick", action="store_true", help="40 sequences, 8M, hf-careful vs protlens, 3 rounds")
    p.add_argument("--out", help="also write the tables to benchmarks/results/OUT.md")
    p.add_argument("--dtype", default="fp32", choices=PROTLENS_DTYPES, help="protlens' precision")
    p.add_argument("--hf-dtype", default="fp32", choices=list(DTYPES), help="the HF loops' precision")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--load-note", default="Measured on a shared machine under load from other jobs: absolute rates "
                   "are not representative; ratios of methods run alternately are.",
                   help="who else was using the machine, for the results header")
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        args.arch = args.arch[0]
        return child(args)
    if args.quick:
        args.limit, args.arch, args.methods, args.repeats = 40, args.arch or ["8M"], "hf-careful,protlens", 3
    if not Path(args.fasta).exists():
        sys.exit(f"skipped: {args.fasta} not found")
    import datetime

    import torch

    from _results import command, machine, write

    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
             f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
             + f", protlens {args.dtype}, HF loops {args.hf_dtype}, fair-esm fp32"]
    print(lines[0])
    summary = []
    for arch in args.arch or ["8M"]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_models(arch, folder, args.layout)
            runs: dict[str, list[dict]] = {}
            for _ in range(args.repeats):
                for method in args.methods.split(","):
                    cmd = [sys.executable, __file__, "--method", method, "--folder", tmp, "--fasta", args.fasta,
                           "--arch", arch, "--layout", args.layout, "--dtype", args.dtype, "--hf-dtype",
                           args.hf_dtype, "--device", args.device]
                    cmd += ["--limit", str(args.limit)] if args.limit else []
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(r.stderr[-3000:])
                        raise SystemExit(f"{method} failed")
                    runs.setdefault(method, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
            rows = {m: {**rs[0], "seconds": float(np.median([x["seconds"] for x in rs])),
                        "rss_mb": max(x["rss_mb"] for x in rs)} for m, rs in runs.items()}
            ref_name = "fair-esm" if "fair-esm" in rows else next(iter(rows))
            ref = np.load(folder / f"emb-{ref_name}.npy")
            name = "ESM-1b layout" if args.layout == "esm1b" else "ESM-2"
            table = [f"\n## {name} {arch} architecture (random init), {args.limit or 'all'} sequences of "
                     f"{Path(args.fasta).name}" + (f", median of {args.repeats} alternating rounds" if args.repeats > 1
                                                   else "")]
            gpu = args.device.startswith("cuda")
            table.append("| method | residues/s | seconds | peak RSS (MB) |" + (" peak GPU (MB) |" if gpu else "")
                         + f" max abs diff vs {ref_name} |")
            table.append("|---|---|---|---|" + ("---|" if gpu else "") + "---|")
            errors = []
            for method, r in rows.items():
                diff = ""
                if method != "protlens-windowed" and method != ref_name:
                    emb = np.load(folder / f"emb-{method}.npy")
                    diff = f"{np.abs(emb - ref).max():.1e}"
                    if method == "protlens" and args.dtype != "fp32":
                        ref_dtype = "fp32" if ref_name == "fair-esm" else args.hf_dtype
                        errors.append(reduced_precision_errors(emb, ref, args.dtype, f"{ref_name} ({ref_dtype})"))
                mem = f" {r['gpu_mb']:.0f} |" if gpu else ""
                table.append(f"| {method} | {r['residues'] / r['seconds']:,.0f} | {r['seconds']:.1f} | "
                             f"{r['rss_mb']:.0f} |{mem} {diff} |")
            table += errors
            if "protlens" in rows:
                r = rows["protlens"]
                rate = r["flops"] / r["seconds"]
                table.append(f"protlens model FLOP rate {rate / 1e12:.3f} TFLOP/s = {rate / r['peak_flops']:.0%} of the "
                             f"measured {peak_dtype(args.dtype)} matmul peak on {args.device} ({r['peak_flops'] / 1e12:.3f} "
                             "TFLOP/s; timed from imports, so model loading counts against it)")
                speed = {m: r["residues"] / r["seconds"] for m, r in rows.items()}
                for m in ("fair-esm", "hf-plain", "hf-careful"):
                    if m in speed:
                        ratio = speed["protlens"] / speed[m]
                        table.append(f"protlens / {m}: {ratio:.2f}x")
                        if m == "hf-careful" and args.dtype != args.hf_dtype:
                            summary.append({"issue": "22", "target": f"{name} {arch}: protlens {args.dtype} (own "
                                            f"line, not the {args.hf_dtype} target) vs the careful HF loop in "
                                            f"{args.hf_dtype}", "measured": f"{ratio:.2f}x; {errors[0]}"
                                            if errors else f"{ratio:.2f}x", "met": "n/a (reduced precision)"})
                        elif m == "hf-careful":
                            mem_ok = rows["protlens"]["rss_mb"] <= rows[m]["rss_mb"]
                            isa = torch.backends.cpu.get_cpu_capability() if args.device == "cpu" else args.device
                            summary.append({"issue": "17" if args.layout == "esm1b" else "22",
                                            "target": f"{name} {arch} ({isa}): protlens >= 1.2x the careful HF "
                                                      "loop, peak RSS no higher",
                                            "measured": f"{ratio:.2f}x, RSS {rows['protlens']['rss_mb']:.0f} vs "
                                                        f"{rows[m]['rss_mb']:.0f} MB",
                                            "met": "yes" if ratio >= 1.2 and mem_ok else "no"})
            print("\n".join(table))
            lines += table
    if args.out:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head = [f"## Embedding throughput ({args.layout} layout)", "",
                f"Command: `{command()}`; {when}; {machine()}. {args.load_note}", ""]
        write(args.out, "\n".join(head + lines), summary)


if __name__ == "__main__":
    main()
