"""Kinase clustering with UniRep beside 3-mer profiles, Smith-Waterman and chance.

Sets (from ``kinase_clustering.py``): (a) the 40 Manning families with >= 5 human kinase domains,
(b) the 12 Manning groups on all domains. Each embedding (``h_avg`` for UniRep, protlens' default
pooling) is clustered at k = the number of classes by k-means and by spectral clustering on the
15-NN cosine graph, both through ``protlens.tl`` (rows L2-normalised: cosine), on the raw vectors
and standardised (each dimension z-scored over the proteins, then the same clustering).
Smith-Waterman/BLOSUM62 similarities (parasail) have no vectors: spectral on their kNN graph and
average-linkage (UPGMA) in the k-means column. Scores: mean and sd over ``--seeds`` seeds.

    python benchmarks/unirep_kinases.py                    # unirep1900/256/64, kmer, alignment
    python benchmarks/unirep_kinases.py --quick            # unirep64 and kmer, 2 seeds
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

from kinase_clustering import DATA, chance_row, load_set
from unirep_throughput import cpu_model
from _results import write_summary

RESULTS = Path(__file__).resolve().parent / "results"


def embed_all(domains: ad.AnnData, name: str) -> tuple[np.ndarray | None, float, str]:
    """Pooled embedding of every domain (None for the alignment baseline), seconds, display name."""
    from protlens import pp

    a = ad.AnnData(obs=domains.obs[["sequence"]].copy())
    t0 = time.perf_counter()
    pp.embed(a, model=name, progress=False)
    return np.asarray(a.X, dtype=np.float32), time.perf_counter() - t0, f"{a.uns['embed']['model']} ({a.uns['embed']['pooling']})"


def score(y: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    return adjusted_rand_score(y, c), normalized_mutual_info_score(y, c)


def vector_rows(X: np.ndarray, y: np.ndarray, name: str, seeds: list[int]) -> list[dict]:
    from protlens import tl

    k = len(set(y))
    rows = []
    for prep, Z in (("raw", X), ("standardised", StandardScaler().fit_transform(X))):
        a = ad.AnnData(X=Z.astype(np.float32))
        for method in ("kmeans", "spectral"):
            res = []
            for seed in seeds:
                if method == "spectral":
                    tl.neighbors(a, n_neighbors=15, random_state=seed)
                tl.cluster(a, method, n_clusters=k, random_state=seed, key_added="c")
                res.append(score(y, a.obs["c"].astype(str).to_numpy()))
            rows.append(_row(name, method, prep, res))
    return rows


def alignment_rows(seqs: list[str], y: np.ndarray, seeds: list[int]) -> list[dict]:
    from protlens import tl
    from protlens.baselines import alignment

    a = ad.AnnData(obs=pd.DataFrame({"sequence": seqs}, index=[str(i) for i in range(len(seqs))]))
    alignment(a, key_added="alignment")
    k = len(set(y))
    rows = []
    for method, graph in (("agglomerative (UPGMA)", "alignment"), ("spectral", "connectivities")):
        res = []
        for seed in seeds:
            tl.neighbors(a, n_neighbors=15, use_graph="alignment", random_state=seed)
            tl.cluster(a, method.split()[0], n_clusters=k, random_state=seed, use_graph=graph, key_added="c")
            res.append(score(y, a.obs["c"].astype(str).to_numpy()))
        rows.append(_row("Smith-Waterman BLOSUM62 (parasail)", method, "similarity", res))
    return rows


def _row(name: str, method: str, prep: str, res: list[tuple[float, float]]) -> dict:
    r = np.array(res)
    return {"embedder": name, "method": method, "features": prep, "ARI": r[:, 0].mean(), "ARI sd": r[:, 0].std(),
            "NMI": r[:, 1].mean(), "NMI sd": r[:, 1].std()}


def to_markdown(table: pd.DataFrame) -> str:
    cols = ["embedder", "method", "features", "ARI", "NMI"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        ari = f"{r['ARI']:.3f}" + (f" ± {r['ARI sd']:.3f}" if pd.notna(r.get("ARI sd")) else "")
        nmi = f"{r['NMI']:.3f}" + (f" ± {r['NMI sd']:.3f}" if pd.notna(r.get("NMI sd")) else "")
        lines.append(f"| {r['embedder']} | {r['method']} | {r['features']} | {ari} | {nmi} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--models", default="unirep1900,unirep256,unirep64,kmer")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--no-alignment", action="store_true")
    p.add_argument("--quick", action="store_true", help="unirep64 and kmer only, 2 seeds, no alignment")
    p.add_argument("--threads", type=int, default=1, help="torch threads for embedding")
    p.add_argument("--out", type=Path, default=RESULTS / "unirep_kinases.md")
    args = p.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found (the kinase data lives in ../shared/data/kinases)")
    if args.quick:
        args.models, args.seeds, args.no_alignment = "unirep64,kmer", 2, True
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    seeds = list(range(args.seeds))
    domains = load_set("b", args.data)  # all domains; set (a) is a subset of them
    sets = {"a": load_set("a", args.data), "b": domains}
    embeddings, notes = {}, []
    for name in args.models.split(","):
        X, secs, label = embed_all(domains, name)
        embeddings[label] = pd.DataFrame(X, index=domains.obs_names)
        notes.append(f"{label}: {domains.n_obs} domains, {int(domains.obs['length'].sum()):,} residues embedded "
                     f"in {secs:.0f} s")
        print(notes[-1], file=sys.stderr)
    sections, summary = [], []
    for key, adata in sets.items():
        y = adata.obs["label"].astype(str).to_numpy()
        rows = []
        for label, frame in embeddings.items():
            rows += vector_rows(frame.loc[adata.obs_names].to_numpy(), y, label, seeds)
        if not args.no_alignment:
            rows += alignment_rows(adata.obs["sequence"].tolist(), y, seeds)
        chance = chance_row(adata, 20, 0)
        rows.append({"embedder": chance["embedder"], "method": "-", "features": "-", "ARI": chance["ARI"],
                     "ARI sd": np.nan, "NMI": chance["NMI"], "NMI sd": np.nan})
        table = pd.DataFrame(rows)
        title = f"({key}) {adata.n_obs} domains, {len(set(y))} classes ({'Manning families with >= 5 domains' if key == 'a' else 'Manning groups'})"
        sections.append(f"### {title}\n\n{to_markdown(table)}")
        print(sections[-1], file=sys.stderr)
        best = table[table["embedder"].str.startswith("unirep1900")]
        if len(best):
            b = best.loc[best["ARI"].idxmax()]
            kmer = table[table["embedder"].str.startswith("kmer")]
            k = kmer.loc[kmer["ARI"].idxmax()] if len(kmer) else None
            summary.append({"issue": "20", "target": f"UniRep1900 kinase clustering {title}: ARI vs 3-mer profiles",
                            "measured": f"UniRep1900 best ARI {b['ARI']:.3f} ({b['method']}, {b['features']})"
                            + (f" vs 3-mer best {k['ARI']:.3f} ({k['method']}, {k['features']})" if k is not None
                               else ""),
                            "met": "n/a (measurement)"})
    cmd = "python benchmarks/unirep_kinases.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        "## UniRep on the human kinome (issue 20)", "",
        f"Command: `{cmd.strip()}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {cpu_model()}; torch "
        f"{torch.__version__}, {args.threads} thread(s); shared machine (1-min load average "
        f"{os.getloadavg()[0]:.1f} at the end; times are under that load).", "",
        "k = the number of classes. k-means and spectral (15-NN graph) run through `protlens.tl` on cosine "
        "(rows L2-normalised); `standardised` = each dimension z-scored over the proteins first. Mean ± sd over "
        f"{len(seeds)} seeds (k-means initialisation and spectral's final k-means). UniRep pooling: h_avg (the "
        "mean of the states after the start token and every residue).", "",
        *[f"- {n}" for n in notes], "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")
    write_summary(args.out.with_suffix(".summary.json"), summary)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
