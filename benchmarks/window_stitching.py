"""Window stitching: how far stitched small windows fall from the full-context pass, per rule.

For proteins that fit one full window of the model, embed them whole (the reference) and again as
overlapping small windows (128/256 residues, overlaps 32-128) stitched under each rule of
``protlens.pp._windows`` (uniform, centre-weighted, most-central). Reported, per model and window
setting: per-residue relative L2 error of the last layer, pooled (mean) relative L2 error, and the
mean absolute error of per-residue log-probabilities (what ECE and mutation scoring read), on a
random-init ESM-2 of protlens-small's size and on the trained protlens-small.

    python benchmarks/window_stitching.py            # 40 proteins
    python benchmarks/window_stitching.py --quick    # 8 proteins
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

from _results import machine, write

DEFAULT_FASTA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kinases" / "hs_sequences.fasta"
SETTINGS = [(128, 32), (128, 64), (256, 64), (256, 128)]


def proteins(fasta: Path, n: int, reach: int) -> list[str]:
    """The first ``n`` standard-residue proteins of 300..reach residues (one full window each)."""
    from protlens.io import iter_fasta

    out = []
    for _, seq in iter_fasta(fasta):
        seq = seq.upper()
        if 300 <= len(seq) <= reach and set(seq) <= set("ACDEFGHIKLMNPQRSTVWY"):
            out.append(seq)
        if len(out) == n:
            break
    return out


def forward(model, pieces: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Last-layer states and log-probabilities of each piece's residues."""
    from protlens.models import ESM_ALPHABET

    toks, _ = ESM_ALPHABET.batch(pieces)
    with torch.inference_mode():
        out = model(torch.from_numpy(toks), repr_layers=[-1], return_logits=True)
    hid = out.hidden[model.num_layers].numpy()
    lp = torch.log_softmax(out.logits, -1).numpy()
    return ([hid[j, 1 : len(p) + 1] for j, p in enumerate(pieces)],
            [lp[j, 1 : len(p) + 1] for j, p in enumerate(pieces)])


def protein_args(doc: str) -> argparse.Namespace:
    """The options of the protein-panel benchmarks (``--fasta``, ``--n``, ``--quick``), checked; one thread."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", default=str(DEFAULT_FASTA))
    p.add_argument("--n", type=int, default=40, help="proteins")
    p.add_argument("--quick", action="store_true", help="8 proteins")
    args = p.parse_args()
    if not Path(args.fasta).exists():
        sys.exit(f"skipped: {args.fasta} not found")
    torch.set_num_threads(1)
    return args


def errors(model, seqs: list[str]) -> dict[tuple[int, int, str], dict[str, float]]:
    """Mean errors over ``seqs`` per (window, overlap, rule)."""
    from protlens.pp._windows import WINDOW_RULES, stitch, window_spans

    acc: dict[tuple[int, int, str], list[tuple[float, float, float]]] = {}
    for seq in seqs:
        (full_h,), (full_lp,) = forward(model, [seq])
        for window, overlap in SETTINGS:
            spans = window_spans(len(seq), window, overlap)
            hs, lps = forward(model, [seq[s:e] for s, e in spans])
            for rule in WINDOW_RULES:
                h = stitch(spans, hs, len(seq), rule)
                lp = stitch(spans, lps, len(seq), rule)
                lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)  # blended log-probs renormalised
                per_res = float(np.mean(np.linalg.norm(h - full_h, axis=1) / np.linalg.norm(full_h, axis=1)))
                pooled = float(np.linalg.norm(h.mean(0) - full_h.mean(0)) / np.linalg.norm(full_h.mean(0)))
                lp_err = float(np.mean(np.abs(np.exp(full_lp) * (lp - full_lp)).sum(1)))
                acc.setdefault((window, overlap, rule), []).append((per_res, pooled, lp_err))
    return {k: dict(zip(("per_residue", "pooled", "logprob"), np.mean(v, axis=0))) for k, v in acc.items()}


def main() -> None:
    args = protein_args(__doc__)
    from protlens.bench.runner import random_init_model
    from protlens.models import load_model
    from protlens.pp._windows import WINDOW_RULE, WINDOW_RULES

    trained = load_model("protlens-small")
    models = {"random-init ESM-2 (protlens-small size)": random_init_model("protlens-small", seed=0),
              "protlens-small (trained)": trained}
    seqs = proteins(Path(args.fasta), 8 if args.quick else args.n, trained.max_residues)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Window stitching: stitched small windows vs the full-context pass",
        "",
        f"Command: `python benchmarks/window_stitching.py{' --quick' if args.quick else ''}`; {started}; "
        f"{machine()}. Errors only (no timings), so load does not affect them.",
        "",
        f"{len(seqs)} human kinases of {min(map(len, seqs))}-{max(map(len, seqs))} residues "
        f"({Path(args.fasta).name}), each within one full window, embedded whole and as overlapping windows. "
        "Per residue: mean over residues of |stitched - full| / |full| (last layer, L2). Pooled: the same "
        "for the mean-pooled vector. Log-prob: mean over residues of sum_a p_full(a) |log p_stitched(a) - "
        "log p_full(a)| (blended log-probabilities renormalised). Lower is better; best rule per row in bold.",
        "",
    ]
    summary, wins = [], {r: 0 for r in WINDOW_RULES}
    for name, model in models.items():
        res = errors(model, seqs)
        lines += [f"### {name}", "", "| window | overlap | metric | " + " | ".join(WINDOW_RULES) + " |",
                  "|---|---|---|" + "---|" * len(WINDOW_RULES)]
        for window, overlap in SETTINGS:
            for metric in ("per_residue", "pooled", "logprob"):
                vals = {r: res[(window, overlap, r)][metric] for r in WINDOW_RULES}
                best = min(vals, key=vals.get)
                wins[best] += 1
                cells = [f"**{v:.4f}**" if r == best else f"{v:.4f}" for r, v in vals.items()]
                lines.append(f"| {window} | {overlap} | {metric.replace('_', ' ')} | " + " | ".join(cells) + " |")
            errs = {r: res[(window, overlap, r)]["per_residue"] for r in WINDOW_RULES}
            summary.append({"issue": "17", "target": f"{name}, window {window}/overlap {overlap}: protlens' rule "
                                                      f"({WINDOW_RULE}) has the lowest per-residue error",
                            "measured": ", ".join(f"{r} {v:.4f}" for r, v in errs.items()),
                            "met": "yes" if min(errs, key=errs.get) == WINDOW_RULE else "no"})
        lines.append("")
    lines += [f"Best-rule count over all rows: {json.dumps(wins)}. protlens stitches with `{WINDOW_RULE}` "
              "(recorded as `uns['embed']['window_rule']`)."]
    print("\n".join(lines))
    write("window_stitching", "\n".join(lines), summary)


if __name__ == "__main__":
    main()
