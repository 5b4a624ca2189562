"""Kinase clustering: how well does each embedder x clustering method recover the Manning classes?

Three label sets from the human kinome (../shared/data/kinases):
  (a) Manning families with >= 5 kinase domains (hs_domains.fasta; 40 families, 338 domains),
  (b) the 12 Manning groups on all 532 domains,
  (c) the families of (a) on full-length sequences (hs_sequences.fasta; multi-domain proteins up
      to thousands of residues, closer to what the published study embedded).
Embedders: 3-mer and 1+2+3-mer profiles, Smith-Waterman/BLOSUM62 similarity (parasail), every
protein language model protlens ships (``protlens.models.available_bundled()``) and any given
with ``--model``. Methods: k-means, spectral and Leiden (the alignment similarity has no vectors,
so it gets average-linkage agglomerative (UPGMA) instead of k-means), each with k = the number of
true classes and with k chosen automatically (each method's default rule, see benchmarks/auto_k.py).
Reference rows: ``mmseqs easy-cluster`` itself, chance (true labels permuted, mean of
``--n-perm`` permutations) and the published ESM-2 numbers (not measured here).

    python benchmarks/kinase_clustering.py                 # all three sets, writes results/kinase_clustering.md
    python benchmarks/kinase_clustering.py --sets a --model /path/to/esm2_t12_35M_UR50D
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from _results import write_summary, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kinases"
RESULTS = ROOT / "benchmarks" / "results" / "kinase_clustering.md"
#: hs_domains.fasta has records whose "sequence" is the text NA (FAM198A/B): not domains, dropped.
MIN_LENGTH = 10
PUBLISHED = [("k-means", 0.2352, 0.4554), ("spectral", 0.2374, 0.5505)]
SETS = {
    "a": ("(a) 40 Manning families, kinase domains", "Kinase_Family"),
    "b": ("(b) 12 Manning groups, kinase domains", "Kinase_Group"),
    "c": ("(c) families of (a), full-length sequences", "Kinase_Family"),
}


def load_set(key: str, data: Path) -> ad.AnnData:
    """Sequences of one set with their Manning labels in ``obs['label']`` (FASTA ids are Manning names).

    Families for (a) and (c) are those with >= 5 records in hs_domains.fasta, as counted before
    placeholder records are dropped.
    """
    from protlens.io import read_sequences

    kinome = pd.read_csv(data / "hs_kinome.csv", dtype=str).set_index("Manning_Name")
    domains = read_sequences(data / "hs_domains.fasta")
    for col in ("Kinase_Group", "Kinase_Family"):
        domains.obs[col] = kinome[col].reindex(domains.obs_names).to_numpy()
    counts = domains.obs["Kinase_Family"].value_counts()
    families = set(counts.index[counts >= 5])
    if key == "b":
        adata = domains
    elif key == "a":
        adata = domains[domains.obs["Kinase_Family"].isin(families)].copy()
    else:
        full = read_sequences(data / "hs_sequences.fasta")
        unknown = [i for i in full.obs_names if i not in kinome.index]
        if unknown:
            raise SystemExit(f"full-length ids not in hs_kinome.csv Manning_Name: {unknown[:5]}")
        full.obs["Kinase_Family"] = kinome["Kinase_Family"].reindex(full.obs_names).to_numpy()
        adata = full[full.obs["Kinase_Family"].isin(families)].copy()
    placeholder = adata.obs["length"] < MIN_LENGTH
    if placeholder.any():
        print(f"  dropped {int(placeholder.sum())} placeholder record(s) shorter than {MIN_LENGTH} residues: "
              f"{', '.join(adata.obs_names[placeholder])}", file=sys.stderr)
        adata = adata[~placeholder.to_numpy()].copy()
    adata.obs["label"] = adata.obs[SETS[key][1]].astype(str)
    return adata


def embedders(extra: list[str]) -> list[str]:
    from protlens.models import available_bundled

    return ["kmer", "kmer123", "alignment"] + available_bundled() + extra


def prepare(adata: ad.AnnData, embedder: str, seed: int, n_neighbors: int) -> tuple[ad.AnnData, float, str]:
    """Embed (or align) and build the kNN graph; returns (adata, seconds, model name)."""
    from protlens import pp, tl
    from protlens.baselines import alignment

    a = ad.AnnData(obs=adata.obs[["sequence", "label"]].copy())
    t0 = time.perf_counter()
    if embedder == "alignment":
        alignment(a, key_added="alignment")
        tl.neighbors(a, n_neighbors=n_neighbors, use_graph="alignment", random_state=seed)
        name = "Smith-Waterman BLOSUM62 (parasail)"
    else:
        pp.embed(a, model=embedder, progress=False)
        tl.neighbors(a, n_neighbors=n_neighbors, random_state=seed)
        name = a.uns["embed"]["model"]
    return a, time.perf_counter() - t0, name


def cluster_rows(a: ad.AnnData, embedder: str, name: str, k_true: int, seed: int) -> list[dict]:
    from protlens import tl

    y = a.obs["label"].to_numpy()
    is_alignment = embedder == "alignment"
    methods = ["agglomerative", "spectral", "leiden"] if is_alignment else ["kmeans", "spectral", "leiden"]
    rows = []
    for method in methods:
        for k in (k_true, None):
            graph = None
            if is_alignment:
                graph = "alignment" if method == "agglomerative" else "connectivities"
            t0 = time.perf_counter()
            tl.cluster(a, method, n_clusters=k, random_state=seed, use_graph=graph, key_added="c")
            c = a.obs["c"].astype(str).to_numpy()
            rows.append({"embedder": name, "method": method + (" (UPGMA)" if method == "agglomerative" else ""),
                         "k": "true" if k else "auto", "clusters": len(set(c)),
                         "ARI": adjusted_rand_score(y, c), "NMI": normalized_mutual_info_score(y, c),
                         "seconds": time.perf_counter() - t0})
    return rows


def neighbour_sensitivity(a: ad.AnnData, embedder: str, name: str, k_true: int, seed: int,
                          grid: tuple[int, ...] = (5, 10, 15, 30)) -> list[dict]:
    """Spectral and Leiden (k = true) on kNN graphs of several sizes: how much the graph choice matters."""
    from protlens import tl

    y = a.obs["label"].to_numpy()
    graph = "alignment" if embedder == "alignment" else None
    rows = []
    for nn in grid:
        tl.neighbors(a, n_neighbors=nn, use_graph=graph, random_state=seed, key_added="sens")
        for method in ("spectral", "leiden"):
            tl.cluster(a, method, n_clusters=k_true, random_state=seed, use_graph="sens_connectivities",
                       key_added="c")
            c = a.obs["c"].astype(str).to_numpy()
            rows.append({"embedder": name, "method": method, "n_neighbors": nn,
                         "ARI": adjusted_rand_score(y, c), "NMI": normalized_mutual_info_score(y, c)})
    return rows


def mmseqs_row(adata: ad.AnnData) -> dict | None:
    if shutil.which("mmseqs") is None:
        print("  mmseqs not installed: reference row skipped", file=sys.stderr)
        return None
    from protlens.baselines import mmseqs_cluster, mmseqs_version

    y = adata.obs["label"].to_numpy()
    t0 = time.perf_counter()
    c = mmseqs_cluster(adata.obs["sequence"].tolist(), list(adata.obs_names))
    return {"embedder": f"MMseqs2 {mmseqs_version()} easy-cluster (--min-seq-id 0.3 -c 0.8)", "method": "mmseqs",
            "k": "auto", "clusters": len(set(c)), "ARI": adjusted_rand_score(y, c),
            "NMI": normalized_mutual_info_score(y, c), "seconds": time.perf_counter() - t0}


def chance_row(adata: ad.AnnData, n_perm: int, seed: int) -> dict:
    """A random clustering with exactly the true class sizes: the true labels, permuted."""
    y = adata.obs["label"].to_numpy()
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(y) for _ in range(n_perm)]
    return {"embedder": f"chance (labels permuted, mean of {n_perm})", "method": "-", "k": "true",
            "clusters": len(set(y)), "ARI": np.mean([adjusted_rand_score(y, p) for p in perms]),
            "NMI": np.mean([normalized_mutual_info_score(y, p) for p in perms]), "seconds": np.nan}


def run_set(key: str, data: Path, extra: list[str], n_perm: int, seed: int, n_neighbors: int,
            sensitivity: bool) -> tuple[str, pd.DataFrame, pd.DataFrame | None, float]:
    adata = load_set(key, data)
    k_true = adata.obs["label"].nunique()
    title = f"{SETS[key][0]}: {adata.n_obs} sequences, {k_true} classes ({SETS[key][1]})"
    print(f"\n{title}", file=sys.stderr)
    rows, sens = [], []
    for emb in embedders(extra):
        a, secs, name = prepare(adata, emb, seed, n_neighbors)
        print(f"  {name}: embedded/aligned in {secs:.1f} s", file=sys.stderr)
        for r in cluster_rows(a, emb, name, k_true, seed):
            r["embed_s"] = secs
            rows.append(r)
        if sensitivity:
            sens += neighbour_sensitivity(a, emb, name, k_true, seed)
    for r in (mmseqs_row(adata), chance_row(adata, n_perm, seed)):
        if r is not None:
            rows.append(r)
    table = pd.DataFrame(rows)
    if key == "a":
        for method, ari, nmi in PUBLISHED:
            table.loc[len(table)] = {"embedder": "published: ESM-2, 26 subfamilies (Saadati et al.; not measured "
                                                 "here, different label set)", "method": method, "k": "26",
                                     "clusters": 26, "ARI": ari, "NMI": nmi}
    return title, table, pd.DataFrame(sens) if sens else None, adata.n_obs / k_true


def to_markdown(table: pd.DataFrame,
                cols: tuple[str, ...] = ("embedder", "method", "k", "clusters", "ARI", "NMI", "embed s", "cluster s")
                ) -> str:
    shown = table.copy()
    for col in ("ARI", "NMI"):
        shown[col] = shown[col].map(lambda v: f"{v:.3f}")
    for col in ("seconds", "embed_s"):
        if col in shown:
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown = shown.rename(columns={"seconds": "cluster s", "embed_s": "embed s"})
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for _, r in shown.iterrows()]
    return "\n".join(lines)


def summary_row(table: pd.DataFrame) -> dict:
    """BENCHMARKS.md's row for set (a): each measured embedder's best ARI at k = true, then chance."""
    measured = table[(table["k"] == "true") & ~table["embedder"].str.startswith("published")]
    best = measured.loc[measured.groupby("embedder", sort=False)["ARI"].idxmax()]
    parts = [f"{r.embedder}{'' if r.method == '-' else ' + ' + r.method} {r.ARI:.3f}/{r.NMI:.3f}"
             for r in best.itertuples()]
    return {"issue": "3 kinase clustering",
            "target": "table vs published ESM-2 (ARI 0.235/0.237) and baselines",
            "measured": "40 Manning families, k = 40, best method per embedder, ARI/NMI: " + "; ".join(parts),
            "met": "table complete (kinase_clustering.md); no pretrained ESM-2 available offline"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--sets", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument("--model", action="append", default=[], help="extra PLM (name or path), repeatable")
    p.add_argument("--n-perm", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-neighbors", type=int, default=15, help="kNN graph size for spectral and Leiden")
    p.add_argument("--sensitivity", default="a", help="sets that also get the n_neighbors sweep ('' for none)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from protlens.tl._choose_k import DEFAULT_RULE

    if not args.data.exists():
        raise SystemExit(f"{args.data} not found (the kinase data lives in ../shared/data/kinases)")
    warnings.filterwarnings("ignore", category=UserWarning)  # perplexity caps etc.; the table says what ran
    command = "python benchmarks/kinase_clustering.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sections, tables = [], {}
    for key in args.sets.split(","):
        key = key.strip()
        title, table, sens, mean_class = run_set(key, args.data, args.model, args.n_perm, args.seed,
                                                 args.n_neighbors, key in args.sensitivity.split(","))
        md = to_markdown(table)
        if sens is not None:
            md += ("\n\nSensitivity to the kNN graph (k = true; the main table uses "
                   f"n_neighbors = {args.n_neighbors}; the mean class here has {mean_class:.1f} members):\n\n"
                   + to_markdown(sens, ("embedder", "method", "n_neighbors", "ARI", "NMI")))
        tables[key] = table
        print(f"\n### {title}\n\n{md}")
        sections.append(f"### {title}\n\n{md}")
    header = (f"## Kinase clustering (issue 3)\n\nCommand: `{command.strip()}`  \n"
              f"Machine: 2-core CPU, 24 GB, no GPU. Date: {dt.date.today().isoformat()}. "
              f"Seed {args.seed}.\n\n"
              "ARI first: it is 0 for a random partition whatever the number of clusters; NMI is not (read it "
              "against the chance row). `k = true`: the number of classes is given; `k = auto`: each method "
              f"chooses by its default rule ({', '.join(f'{m}: {r}' for m, r in DEFAULT_RULE.items())}). Spectral and "
              f"Leiden run on the {args.n_neighbors}-NN graph (cosine for vectors, 1 - similarity for the "
              "alignment scores).\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, header + "\n" + "\n\n".join(sections) + "\n")
    if "a" in tables:
        write_summary(args.out.with_suffix(".summary.json"), [summary_row(tables["a"])])
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
