"""Are protlens' explanations faithful and plausible? Surrogate accuracy, deletion curves, motif recovery.

Two data sets:
1. ``synthetic_families`` (planted family-specific motifs): AUROC of each method's per-residue
   importance for the planted positions, explaining the true families and spectral clusters.
2. Human kinase domains (../shared/data/kinases, families with >= 5 domains): clusters from k-means and
   spectral clustering with k = number of families, then explanations scored for faithfulness
   (deletion curves), plausibility (enrichment at GxGxxG / VAIK / HRD / DFG / APE with permutation
   p-values) and the k-means vs spectral overlap; wall time of the explain step.

No pretrained ESM-2 weights are available offline, so by default clustering uses 3-mer profiles and the
per-residue embeddings (and the end-to-end attribution) come from a *randomly initialised* ESM-2 of a
tiny size; ``--model`` swaps in a real one. Results are printed as markdown; with ``--out``, the
planted-motif summary row of BENCHMARKS.md goes to ``<out>.summary.json`` next to it.

    OMP_NUM_THREADS=1 python benchmarks/explain_quality.py --out benchmarks/results/explain.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from protlens.datasets import synthetic_families
from protlens.explain import explain
from protlens.io import read_sequences
from protlens.models import EsmPLM, esm2_config, load_model
from protlens.pp import embed
from protlens.tl import cluster
from _results import write_summary, write_text_atomic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kinases"


def random_esm(hidden: int, layers: int, heads: int, seed: int = 0) -> EsmPLM:
    from transformers import EsmForMaskedLM

    torch.manual_seed(seed)
    return EsmPLM(EsmForMaskedLM(esm2_config(layers, hidden, heads)).eval(), f"random-esm2-{layers}L-{hidden}d", "random init")


def rows_for(tag: str, info: dict) -> list[dict]:
    rows = []
    for src, by in info["deletion"].items():
        for m, d in by.items():
            p = info.get("plausibility", {}).get(src, {}).get(m, {})
            rows.append({"data": tag, "model": src, "method": m,
                         "deletion ABC": d["area_between_curves"], "> random": d["frac_proteins_above_random"],
                         "drop top10%": d["drop_top_10pct"], "drop rand10%": d["drop_random_10pct"],
                         "enrichment": p.get("enrichment", np.nan), "p": p.get("p_value", np.nan),
                         "AUROC": p.get("auroc_mean", np.nan)})
    return rows


def md(df: pd.DataFrame) -> str:
    """A markdown table (floats to 3 decimals) without needing ``tabulate``."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


TARGET_AUROC = 0.9


def summary_rows(auroc: pd.DataFrame) -> list[dict]:
    """BENCHMARKS.md's issue-4 row from the per-seed AUROC table, so the headline is never typed by hand."""
    if auroc.empty:
        return []
    stats = auroc.groupby(["model", "method"], sort=False)["AUROC"].agg(["mean", "min", "max"]).reset_index()
    best = stats[stats["mean"].round(3) == round(stats["mean"].max(), 3)]
    top = best.sort_values(["mean", "min"], ascending=False).iloc[0]
    met = ("yes" if top["min"] >= TARGET_AUROC else "on average; not on every seed" if top["mean"] >= TARGET_AUROC
           else "no")
    return [{"issue": "4 explanations", "target": f"planted-motif AUROC >= {TARGET_AUROC:g} (best method)",
             "measured": f"mean (min-max) over {auroc['seed'].nunique()} held-out seeds: "
                         + ", ".join(f"{r.model} {r.method} {r.mean:.3f} ({r.min:.3f}-{r.max:.3f})"
                                     for r in best.itertuples(index=False)),
             "met": met}]


CONTROL_TEXT = ("Clusters come from 3-mer profiles (as in the issue-4 section), so the explanations of the same "
                "partition differ only in the per-residue states the surrogate reads and the network integrated "
                "gradients run through. Control, in the same run with the same settings: a randomly initialised "
                "tiny ESM-2 (residue identity and position, no learned biology).")


def kinase_summary_rows(name: str, rows: list[dict]) -> list[dict]:
    """BENCHMARKS.md's row for a real model's kinase explanations: per attribution source (surrogate, end to
    end through the PLM) its best motif enrichment, beside the untrained control's."""
    df = pd.DataFrame(rows)
    df["run"] = np.where(df["data"].str.contains(f"({name})", regex=False), name, "random-init control")

    def best(run: str) -> str:
        parts = []
        for src, sub in df[df["run"] == run].groupby("model", sort=False):
            r = sub.sort_values("enrichment", ascending=False).iloc[0]
            parts.append(f"{src} {r['method']} {float(r['enrichment']):.2f} (p {float(r['p']):.3f}; deletion: "
                         f"{float(r['> random']):.0%} of proteins above random)")
        return ", ".join(parts) or "not run"

    return [{"issue": f"20 {name} explanations",
             "target": "kinase motif enrichment (GxGxxG, VAIK, HRD, DFG, APE) reported beside an untrained-PLM control",
             "measured": "best enrichment per source (1 = none): " + "; ".join(f"{run}: {best(run)}"
                                                                            for run in (name, "random-init control")),
             "met": "reported"}]


def rows_from_markdown(path: Path) -> list[dict]:
    """The faithfulness/plausibility rows of a results file this script wrote (to redo its summary rows)."""
    lines = path.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| data | model | method | deletion ABC"))
    cols = [c.strip() for c in lines[head].strip("|").split("|")]
    rows = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append({c: (v if c in ("data", "model", "method") else float(v)) for c, v in zip(cols, cells)})
    return rows


def common(args) -> dict:
    return dict(epochs=args.epochs, n_permutations=args.permutations, n_steps=args.n_steps,
                nt_samples=args.nt_samples, n_random=args.n_random, random_state=0)


def run_synthetic(plm, work: Path, args) -> tuple[list[dict], list[dict], list[dict]]:
    """Explain the true families on every seed in ``--synthetic-seeds`` (and spectral clusters on the first).

    Seed 0 was used to choose the surrogate and aggregation defaults, so the default seeds exclude it.
    """
    res, acc, auroc = [], [], []
    for n, seed in enumerate(args.synthetic_seeds):
        adata = synthetic_families(random_state=seed)
        embed(adata, plm, per_residue_file=work / f"syn{seed}_res.h5", progress=False)
        adata.obs["true_family"] = adata.obs["family"].astype(str)
        runs = ["true_family"]
        if n == 0 and not args.skip_synthetic_spectral:
            cluster(adata, "spectral", n_clusters=adata.obs["family"].nunique(), random_state=0)
            runs.append("spectral")
        for clusters in runs:
            tag = f"synthetic{seed}/{clusters}"
            t0 = time.perf_counter()
            explain(adata, clusters, out=work / f"syn{seed}_{clusters}", model=plm, figures=False, **common(args))
            info = adata.uns["explain"]
            res += rows_for(tag, info)
            acc.append({"data": tag, "n": adata.n_obs, "k": info["surrogate"]["n_clusters"],
                        "train acc": info["surrogate"]["train_accuracy"],
                        "held-out acc": info["surrogate"]["test_accuracy"],
                        "chance": info["surrogate"]["chance_accuracy"], "seconds": time.perf_counter() - t0})
            if clusters == "true_family":
                for src, by in info["plausibility"].items():
                    for m, p in by.items():
                        auroc.append({"seed": seed, "model": src, "method": m, "AUROC": p["auroc_mean"],
                                      "sd over proteins": p["auroc_sd"], "pooled AUROC": p["auroc_pooled"]})
    return res, acc, auroc


def kinase_data(min_family: int = 5, min_length: int = 30):
    doms = read_sequences(SHARED / "hs_domains.fasta")
    table = pd.read_csv(SHARED / "hs_kinome.csv", dtype=str).drop_duplicates("Manning_Name").set_index("Manning_Name")
    doms.obs["family"] = table["Kinase_Family"].reindex(doms.obs_names).to_numpy()
    doms.obs["group"] = table["Kinase_Group"].reindex(doms.obs_names).to_numpy()
    # a few records carry the placeholder sequence "NA" (no domain sequence): not a domain, dropped
    doms = doms[doms.obs["length"].to_numpy() >= min_length].copy()
    counts = doms.obs["family"].value_counts()
    keep = doms.obs["family"].isin(counts[counts >= min_family].index).to_numpy()
    return doms[keep].copy()


def run_kinases(plm, work: Path, args) -> dict:
    adata = kinase_data()
    k = adata.obs["family"].nunique()
    embed(adata, load_model("kmer"), progress=False)  # clustering on 3-mer profiles
    for method in ("kmeans", "spectral"):
        cluster(adata, method, n_clusters=k, random_state=0)
    # per-residue embeddings for the surrogate from the (random) PLM, in a sidecar
    embed_info = dict(adata.uns["embed"])
    x_kmer = adata.X.copy()
    embed(adata, plm, per_residue_file=work / "kin_res.h5", progress=False)
    adata.uns["embed_kmer"] = embed_info
    sizes = {m: adata.obs[m].value_counts() for m in ("kmeans", "spectral")}
    out = {"n": adata.n_obs, "k": k, "families": adata.obs["family"].nunique(),
           "singletons": {m: int((s < 2).sum()) for m, s in sizes.items()}}
    # singleton clusters cannot be held out; they are merged into the nearest other cluster (by k-mer centroid)
    for m in ("kmeans", "spectral"):
        lab = adata.obs[m].astype(str).to_numpy()
        names, counts = np.unique(lab, return_counts=True)
        cents = {c: x_kmer[lab == c].mean(0) for c in names}
        for c in names[counts < 2]:
            others = [o for o in names if o != c and o not in names[counts < 2]]
            i = np.flatnonzero(lab == c)[0]
            lab[i] = min(others, key=lambda o: float(((x_kmer[i] - cents[o]) ** 2).sum()))
        adata.obs[m] = lab
    from sklearn.metrics import adjusted_rand_score

    out["ari"] = {m: adjusted_rand_score(adata.obs["family"], adata.obs[m]) for m in ("kmeans", "spectral")}
    t0 = time.perf_counter()
    explain(adata, "spectral", out=work / "kinases", model=plm, compare_with="kmeans", motifs="kinase", **common(args))
    out["seconds"] = time.perf_counter() - t0
    out["info"] = adata.uns["explain"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="PLM for per-residue embeddings (default: random tiny ESM-2)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps")
    ap.add_argument("--nt-samples", type=int, default=16, help="SmoothGrad samples")
    ap.add_argument("--n-random", type=int, default=5, help="random deletion draws per fraction")
    ap.add_argument("--work", default="/tmp/protlens_explain_bench")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--skip-kinases", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    ap.add_argument("--synthetic-seeds", default="1,2,3", type=lambda t: [int(v) for v in t.split(",")],
                    help="synthetic_families seeds (seed 0 was used for tuning the defaults)")
    ap.add_argument("--skip-synthetic-spectral", action="store_true",
                    help="explain only the true families on synthetic data (not also spectral clusters on the first seed)")
    ap.add_argument("--machine", default="2-core CPU, 24 GB, no GPU, shared with a background training job", help="machine description for the header")
    ap.add_argument("--date", default="2026-11-21")
    ap.add_argument("--summary-only", action="store_true",
                    help="rewrite <out>.summary.json from the kinase rows already in --out (needs --model), no run")
    args = ap.parse_args()
    if args.summary_only:
        rows = rows_from_markdown(Path(args.out))
        return write_summary(Path(args.out).with_suffix(".summary.json"), kinase_summary_rows(args.model, rows))
    warnings.filterwarnings("ignore", category=FutureWarning)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    plm = load_model(args.model) if args.model else random_esm(64, 2, 4)
    title = (f"## Explanations with {plm.name} on human kinases: faithfulness and motif enrichment (issue 20)"
             if args.model else "## Explanations: faithfulness and plausibility (issue 4)")
    lines = [title, "",
             f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/explain_quality.py "
             f"{' '.join(sys.argv[1:])}`  ",
             f"Machine: {args.machine} (load average {os.getloadavg()[0]:.1f} at start); date {args.date}; "
             f"torch {torch.__version__}, Python {platform.python_version()}, torch threads {torch.get_num_threads()}.  ",
             f"Per-residue model: **{plm.name}** ({plm.source}; {plm.num_layers} layers x {plm.hidden_size} dims). "
             + (CONTROL_TEXT if args.model else
                "No pretrained ESM-2 weights are available offline: with the default, embeddings carry residue identity "
                "and position but no learned biology, so every number below measures the *explanation machinery* "
                "(surrogate CNN, Captum attributions, deletion, motif statistics), not what ESM-2 knows."), ""]
    syn_rows, acc, auroc = ([], [], []) if args.skip_synthetic else run_synthetic(plm, work, args)
    kin, kin_rows = None, []
    if not args.skip_kinases and SHARED.exists():
        # with a real model, the same run first explains the same clusters with an untrained PLM (the control)
        runs = [(random_esm(64, 2, 4), "control"), (plm, "model")] if args.model else [(plm, "model")]
        for run_plm, role in runs:
            tag = f"kinases/spectral ({run_plm.name})" if args.model else "kinases/spectral"
            kin = run_kinases(run_plm, work / role, args)
            i = kin["info"]
            acc.append({"data": tag, "n": kin["n"], "k": i["surrogate"]["n_clusters"],
                        "train acc": i["surrogate"]["train_accuracy"], "held-out acc": i["surrogate"]["test_accuracy"],
                        "chance": i["surrogate"]["chance_accuracy"], "seconds": kin["seconds"]})
            kin_rows += rows_for(tag, i)
    lines += ["### Surrogate CNN (held-out = stratified 25%)", "",
              "`seconds`: wall time of one `explain` call (all methods, deletion curves, statistics).", "",
              md(pd.DataFrame(acc)), ""]
    if auroc:
        df = pd.DataFrame(auroc)
        best = df.groupby(["model", "method"], sort=False)["AUROC"].agg(["mean", "min", "max"]).reset_index()
        lines += ["### Planted-motif AUROC on `synthetic_families` (true families explained)", "",
                  f"Seeds {', '.join(map(str, args.synthetic_seeds))}: 108 proteins each (9 families, 2 motifs of 6 "
                  "residues per family, about 8% of residues). Surrogate defaults (4 x 128-channel CNNs, kernel 5, "
                  "signed-sum-clipped aggregation) were chosen on seed 0 only; these seeds were not looked at while "
                  "tuning. AUROC: per-protein AUROC of the residue track for the planted positions (0.5 = chance), "
                  "mean over proteins.", "", md(df), "", "Across seeds:", "", md(best), ""]
    rows = syn_rows + kin_rows
    lines += ["### Faithfulness (deletion curves) and plausibility", "",
              "deletion ABC: mean gap (top-k% minus random-k% deletion, k = 5..50%) in the assigned cluster's "
              "log-odds; `> random`: share of proteins with a positive gap. enrichment: mean importance at motif "
              f"residues / protein mean (1 = none), p from {args.permutations} random circular shifts of the motif positions; "
              "AUROC: per-protein AUROC for planted motif residues (synthetic only). `surrogate` = CNN on "
              "per-residue embeddings, `plm` = integrated gradients through the PLM on the token-embedding layer.", "",
              md(pd.DataFrame(rows)), ""]
    if kin:
        i = kin["info"]
        found = pd.DataFrame({k: np.asarray(v) for k, v in i["motifs_found"].items()})
        ov = i["overlap"]
        lines += [f"### Human kinase domains ({plm.name}): {kin['n']} domains, {kin['families']} families (>= 5 domains), "
                  f"k = {kin['k']} clusters on 3-mer profiles", "",
                  f"ARI vs Manning family: k-means {kin['ari']['kmeans']:.3f}, spectral {kin['ari']['spectral']:.3f}. "
                  f"Singleton clusters merged into the nearest cluster before explaining: {kin['singletons']}. "
                  f"End-to-end: {i['end_to_end']}.", "",
                  "Motifs located (strict pattern / relaxed pattern / alignment to a strictly annotated domain):", "",
                  md(found), "",
                  f"K-means vs spectral: Jaccard of the top {float(ov['top_fraction']):.0%} residues of the two "
                  f"explanations of each protein (random sets: {float(ov['random_jaccard']):.3f}; k-means surrogate "
                  f"held-out accuracy {float(ov['test_accuracy_other']):.3f}):", "",
                  md(pd.DataFrame([{"method": m, "mean Jaccard": v} for m, v in ov["jaccard_mean"].items()])), ""]
        method = "integrated_gradients"
        pc = pd.DataFrame({k: np.asarray(v) for k, v in ov["per_cluster"][method].items()})
        lines += [f"Per spectral cluster ({method}; `majority_share_other` = share of members in the cluster's "
                  "majority k-means cluster):", "", md(pc), "",
                  f"Runtime of `explain` on the {kin['n']} kinase domains (4 surrogate methods + IG through the PLM, "
                  f"deletion curves, motif statistics, second surrogate for k-means, figures): "
                  f"**{kin['seconds']:.0f} s** wall ({plm.name}).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        old = Path(args.out).read_text() + "\n" if args.append and Path(args.out).exists() else ""
        write_text_atomic(Path(args.out), old + text + "\n")
        summary = summary_rows(pd.DataFrame(auroc)) + (kinase_summary_rows(plm.name, kin_rows) if args.model else [])
        if summary:
            write_summary(Path(args.out).with_suffix(".summary.json"), summary)


if __name__ == "__main__":
    main()
