"""Automatic number of clusters: which rule (eigengap, silhouette, modularity, stability) finds the right k?

For each data set x embedder x clustering method, ``tl.cluster`` runs once without ``n_clusters``;
it scores every candidate k (Leiden: resolution) by every rule and keeps all candidates' labels,
so each rule's choice is read off the same sweep. Reported per rule: the k it chooses, the true k
and the ARI at the chosen k, next to the ARI at k = true (what ``protlens run`` also reports) and
the best ARI of any candidate (an oracle no rule can beat).

Data: the synthetic hierarchy (``protlens.datasets.synthetic_families``: 3 superfamilies > 9
families > 18 subfamilies, 108 sequences) at three seeds, scored against the families, with the
level each rule lands on; human kinase domains (../shared/data/kinases) against the 40 Manning
families with >= 5 domains and against the 12 groups (as in benchmarks/kinase_clustering.py).
Embedders: 3-mer profiles, Smith-Waterman similarity, protlens-small, and every ``--model``.

    python benchmarks/auto_k.py            # writes benchmarks/results/auto_k.md and auto_k.summary.json
    python benchmarks/auto_k.py --quick    # one synthetic seed, k-mer and alignment only (~1 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from _results import write_summary, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
LEVELS = ("superfamily", "family", "subfamily")


def machine() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {platform.machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def data_sets(quick: bool, seeds: list[int], data: Path) -> list[tuple[str, object, dict[str, str]]]:
    """(name, AnnData with obs['label'] = the scored level, {level name: obs column})."""
    from protlens.datasets import synthetic_families

    out = []
    for seed in seeds[:1] if quick else seeds:
        a = synthetic_families(random_state=seed)
        a.obs["label"] = a.obs["family"].astype(str)
        out.append((f"synthetic seed {seed}", a, {lv: lv for lv in LEVELS}))
    if not quick and data.exists():
        from kinase_clustering import load_set

        for key, what in (("a", "kinase families"), ("b", "kinase groups")):
            a = load_set(key, data)
            out.append((f"{what} ({a.n_obs} domains)", a, {}))
    return out


def sweep_rows(name: str, a, levels: dict[str, str], emb: str, emb_name: str, seed: int, draws: int) -> list[dict]:
    from protlens import tl
    from protlens.tl._choose_k import RULES, KSweep

    y = a.obs["label"].to_numpy()
    k_true = len(set(y))
    alignment = emb == "alignment"
    methods = ["agglomerative", "spectral", "leiden"] if alignment else ["kmeans", "agglomerative", "spectral",
                                                                          "leiden"]
    rows = []
    for method in methods:
        graph = None if not alignment else ("alignment" if method == "agglomerative" else "connectivities")
        t0 = time.perf_counter()
        tl.cluster(a, method, random_state=seed, use_graph=graph, key_added="c", stability_draws=draws)
        secs = time.perf_counter() - t0
        sweep = KSweep(a.uns["c"]["k_sweep"], a.obsm["c_k_sweep"])
        ari = [adjusted_rand_score(y, sweep.labels[:, j]) for j in range(sweep.labels.shape[1])]
        tl.cluster(a, method, n_clusters=k_true, random_state=seed, use_graph=graph, key_added="t")
        at_true = adjusted_rand_score(y, a.obs["t"].to_numpy())
        for rule in RULES[method]:
            j = sweep.ranked(rule)[0]
            row = {"data": name, "embedder": emb_name, "method": method, "rule": rule,
                   "k": int(sweep.table["k"].iat[j]), "k_true": k_true, "ARI": ari[j], "ARI_k_true": at_true,
                   "ARI_best": max(ari), "k_best": int(sweep.table["k"].iat[int(np.argmax(ari))]),
                   "sweep_s": secs}
            if levels:
                by_level = {lv: adjusted_rand_score(a.obs[col], sweep.labels[:, j]) for lv, col in levels.items()}
                row["level"] = max(by_level, key=by_level.get)
                row.update({f"ARI_{lv}": v for lv, v in by_level.items()})
            rows.append(row)
    return rows


def prepare(a, emb: str, seed: int):
    from protlens import pp, tl
    from protlens.baselines import alignment

    keep = [c for c in ("sequence", "label", *LEVELS) if c in a.obs]
    b = type(a)(obs=a.obs[keep].copy())
    if emb == "alignment":
        alignment(b, key_added="alignment")
        tl.neighbors(b, use_graph="alignment", random_state=seed)
        return b, "Smith-Waterman BLOSUM62"
    pp.embed(b, model=emb, progress=False)
    tl.neighbors(b, random_state=seed)
    return b, b.uns["embed"]["model"]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and rule: mean ARI at the chosen k over every (data, embedder) cell, and its gap to the best rule."""
    from protlens.tl._choose_k import DEFAULT_RULE

    rows = []
    for method, sub in table.groupby("method", sort=False):
        wide = sub.pivot_table(index=["data", "embedder"], columns="rule", values="ARI")
        best_rule = wide.mean().idxmax()
        for rule in wide.columns:
            diff = wide[rule] - wide[best_rule]
            ks = sub[sub["rule"] == rule]
            rows.append({"method": method, "rule": rule, "default": "yes" if DEFAULT_RULE[method] == rule else "",
                         "mean ARI": wide[rule].mean(), "gap to best rule": diff.mean(),
                         "gap SE": diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan,
                         "cells": len(diff),
                         "median |log2(k / k_true)|": np.median(np.abs(np.log2(ks["k"] / ks["k_true"])))})
    return pd.DataFrame(rows)


def by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ARI at the chosen k per method and rule, for the synthetic sets and the kinase sets separately."""
    kind = np.where(table["data"].str.startswith("synthetic"), "synthetic (family)", "kinases")
    out = table.assign(sets=kind).pivot_table(index=["method", "rule"], columns="sets", values="ARI", sort=False)
    return out.reset_index()


def markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one synthetic seed, k-mer and alignment only")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model", action="append", default=[], help="extra PLM (name or path), repeatable")
    p.add_argument("--draws", type=int, default=10, help="half-samples for the stability rule")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kinases")
    p.add_argument("--out", type=Path, default=RESULTS / "auto_k.md")
    p.add_argument("--load", default="not stated", help="what else ran on the machine (for the results file)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    command = "python benchmarks/auto_k.py " + " ".join(argv if argv is not None else sys.argv[1:])
    embedders = ["kmer", "alignment"] + ([] if args.quick else ["protlens-small"]) + args.model
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    t0 = time.perf_counter()
    for name, a, levels in data_sets(args.quick, seeds, args.data):
        for emb in embedders:
            b, emb_name = prepare(a, emb, seeds[0])
            rows += sweep_rows(name, b, levels, emb, emb_name, seeds[0], args.draws)
            print(f"{name} / {emb_name}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    cols = ["data", "embedder", "method", "rule", "k", "k_true", "ARI", "ARI_k_true", "ARI_best", "k_best"]
    syn = table[table["data"].str.startswith("synthetic")]
    level_cols = ["data", "embedder", "method", "rule", "k", "level", *[f"ARI_{lv}" for lv in LEVELS]]
    text = ["## Automatic number of clusters (issue 19)\n",
            f"Command: `{command.strip()}`  \nDate: {dt.date.today().isoformat()}. Machine: {machine()}; "
            f"load: {args.load} (timings not reported).  \n"
            f"Stability: {args.draws} random half-samples per candidate; a candidate within 0.02 of the best "
            "stability counts as tied and the finest tied partition wins. Candidates: k on a grid of at most 20 "
            "values in [2, 50] (Leiden: 12 resolutions in [0.05, 10]). kNN graph: 15 neighbours. ARI against the "
            "families (synthetic: 9 families of 108 sequences), the 40 kinase families or the 12 kinase groups. "
            "`ARI_k_true`: the same method given k = the number of classes; `ARI_best`/`k_best`: the best "
            "candidate of the sweep (an oracle).\n",
            "### Summary per method and rule (mean over every data set x embedder)\n",
            markdown(summary), "",
            "### The same, synthetic hierarchy and kinases apart\n",
            markdown(by_kind(table)), "",
            "### Which level of the synthetic hierarchy each rule lands on (3 superfamilies > 9 families > 18 "
            "subfamilies; `level` = the level with the highest ARI)\n", markdown(syn[level_cols]), "",
            "### Every cell\n", markdown(table[cols]), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, "\n".join(text))
    headline = []
    for method, sub in summary.groupby("method", sort=False):
        chosen = sub[sub["default"] == "yes"].iloc[0]
        best = sub.loc[sub["mean ARI"].idxmax()]
        within = chosen["rule"] == best["rule"] or (
            np.isfinite(chosen["gap SE"]) and -chosen["gap to best rule"] <= 2 * chosen["gap SE"])
        headline.append({"issue": "19", "target": f"{method}: the default automatic-k rule is the best rule or "
                                                  "within noise (2 SE) of it on these sets",
                         "measured": f"default {chosen['rule']} mean ARI {chosen['mean ARI']:.3f}; best "
                                     f"{best['rule']} {best['mean ARI']:.3f} over {int(chosen['cells'])} cells",
                         "met": "yes" if within else "no"})
    write_summary(args.out.with_suffix(".summary.json"), headline)
    print("\n".join(text))


if __name__ == "__main__":
    main()
