"""Loss-variant ablation of ``protlens train``: does the delay K matter, does the clustering loss help?

Trains a small ESM-2 from scratch several times with the public :func:`protlens.train.trainer.train`
(same seed, steps, splits and data order; only the objective settings differ) and measures each run:

- held-out masked-token ECE (the trainer's own ``ece_heldout``) and the final loss terms;
- representation quality of mean-pooled last-layer embeddings (sequences truncated to ``crop``, the
  window the models were trained on), ranked by cosine similarity
  (:func:`protlens.bench.homology.labelled_hit_at_k`):
  * *seen families*: ``ece_holdout`` sequences whose family (CATH C.A.T.H / EC 4-level) occurs in
    training; 1-nearest-neighbour leave-one-out accuracy of family and superfamily (CATH C.A.T /
    EC 3-level) over the queries that have another member of their label in the set;
  * *unseen superfamilies*: ``label_holdout`` domains (CATH superfamilies held out of training
    entirely); Hit@1/Hit@5 of a domain of the same CATH superfamily among all other held-out domains,
    over the queries that have one;
- the same scores in the clustering-head space the graph loss shapes (graph variants only);
- how far training moved the family / superfamily node tables (relative to their initial values,
  redrawn as the trainer draws them): the delay K can only matter if the superfamily nodes move;
- wall-clock and process-CPU time of each training run.

Reference rows use the same evaluation on the untrained network (seed 0 initialisation) and on the
3-mer composition baseline (``kmer``); the chance level of each clustering loss (log of the number
of candidate nodes) is printed for comparison. Finished runs and their evaluations in ``--out`` are
reused when configuration and weights are identical, so adding a variant costs only that variant.

    OMP_NUM_THREADS=1 python benchmarks/loss_variants.py --data ../shared/data/pretrain/corpus.tsv \\
        --out /tmp/loss_variants --layers 3 --hidden 128 --heads 8 --steps 300 --variants a,b,c,d,e,f,g \\
        --repeat-seeds 1 [--summary benchmarks/results/loss_variants.summary.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from protlens.bench.homology import labelled_hit_at_k
from protlens.train.config import TrainConfig, config_to_dict
from protlens.train.data import file_sha256, plan_epoch, read_corpus
from protlens.train.module import load_cluster_head
from protlens.train.trainer import build_backbone, train
from _results import write_summary

#: name -> (description, TrainConfig overrides). Everything else is shared by all variants.
VARIANTS: dict[str, tuple[str, dict]] = {
    "a": ("mlm", {"objective": "mlm"}),
    "b": ("mlm+graph, batch softmax, K=1", {"objective": "mlm+graph", "graph_softmax": "batch", "delay_k": 1}),
    "c": ("mlm+graph, batch softmax, K=4", {"objective": "mlm+graph", "graph_softmax": "batch", "delay_k": 4}),
    "d": ("mlm+graph, batch softmax, K=16", {"objective": "mlm+graph", "graph_softmax": "batch", "delay_k": 16}),
    "e": ("mlm+graph, full softmax, cosine, T=0.07 (proxy-NCA), K=1",
          {"objective": "mlm+graph", "graph_softmax": "full", "graph_normalize": True, "graph_temperature": 0.07,
           "delay_k": 1}),
    "f": ("mlm+graph, batch softmax, K=1, node lr 3e-2", {"objective": "mlm+graph", "delay_k": 1, "node_lr": 3e-2}),
    "g": ("mlm+graph, batch softmax, K=16, node lr 3e-2", {"objective": "mlm+graph", "delay_k": 16, "node_lr": 3e-2}),
    "h": ("mlm+graph, batch softmax, K=4, linear head", {"objective": "mlm+graph", "delay_k": 4,
                                                         "cluster_head": "linear"}),
    "i": ("mlm+graph, batch softmax, K=4, no head (score P, eq. 7)", {"objective": "mlm+graph", "delay_k": 4,
                                                                      "cluster_head": "none"}),
}
#: The two comparisons BENCHMARKS.md summarises: delay K (same settings otherwise), clustering head (K = 4).
DELAY_K = {"b": 1, "c": 4, "d": 16}
HEADS = {"c": "MLP head", "h": "linear head", "i": "P itself (eq. 7)"}


def summary_rows(rows: list[dict], seed: int) -> list[dict]:
    """BENCHMARKS.md's rows for the comparisons this run holds, so the headlines are never typed by hand."""
    by = {(r["variant"], r["seed"]): r for r in rows}
    out = []
    if all((v, seed) in by for v in DELAY_K):
        ks = [by[v, seed] for v in DELAY_K]
        ece, hit = [r["ece_heldout"] for r in ks], [r["unseen_hit1"] for r in ks]
        spread = [(abs(by[v, s]["ece_heldout"] - by[v, seed]["ece_heldout"]),
                   abs(by[v, s]["unseen_hit1"] - by[v, seed]["unseen_hit1"]))
                  for v, s in by if v in DELAY_K and s != seed]
        ece_sd, hit_sd = max((e for e, _ in spread), default=None), max((h for _, h in spread), default=None)
        k_ece, k_hit = max(ece) - min(ece), max(hit) - min(hit)
        measured = (f"K = {' / '.join(map(str, DELAY_K.values()))} (seed {seed}): held-out ECE "
                    f"{' / '.join(f'{x:.2f}' for x in ece)}, unseen SF Hit@1 {' / '.join(f'{x:.3f}' for x in hit)}, "
                    f"superfamily nodes moved {' / '.join(fmt(r.get('move_superfamily')) for r in ks)}; "
                    f"range over K: ECE {k_ece:.2f}, Hit@1 {k_hit:.3f}")
        if spread:
            measured += f"; largest seed-to-seed spread of one variant: ECE {ece_sd:.2f}, Hit@1 {hit_sd:.3f}"
            met = "measured: " + ("within" if k_ece <= ece_sd and k_hit <= hit_sd else "beyond") + " seed spread"
        else:
            met = "measured (one seed, no spread to compare)"
        out.append({"issue": "5 delay K", "target": "measure whether it matters", "measured": measured, "met": met})
    if all((v, seed) in by for v in HEADS):
        hit = sorted(((by[v, seed]["unseen_hit1"], name) for v, name in HEADS.items()), reverse=True)
        measured = (f"K = 4, seed {seed}, unseen SF Hit@1: " + ", ".join(f"{name} {h:.3f}" for h, name in hit)
                    + (f" (MLM alone {by['a', seed]['unseen_hit1']:.3f})" if ("a", seed) in by else ""))
        met = f"reported: {hit[0][1]} wins"
        if ("a", seed) in by:
            met += "; " + ("beats" if hit[0][0] > by["a", seed]["unseen_hit1"] else "does not beat") + " MLM alone"
        out.append({"issue": "18 head choice (item 4)",
                    "target": "report which clustering head wins on held-out superfamilies at equal budget",
                    "measured": measured, "met": met})
    return out


def base_config(args: argparse.Namespace, out_dir: Path, seed: int, overrides: dict) -> TrainConfig:
    return TrainConfig(
        data=args.data, out_dir=str(out_dir), crop=args.crop, ece_holdout_frac=0.10, label_holdout_frac=0.20,
        label_holdout_column="family", label_holdout_prefix="cath:", split_seed=0,
        model="scratch", num_layers=args.layers, hidden_size=args.hidden, num_heads=args.heads,
        lr=args.lr, warmup_steps=max(1, args.steps // 10), lr_schedule="cosine", max_tokens=args.max_tokens,
        max_steps=args.steps, threads=1, seed=seed, eval_every=0, eval_max_seqs=args.ece_seqs, log_every=10,
        save_every_min=0, keep_checkpoints=1, resume="never", progress=False, **overrides)


def run_variant(args: argparse.Namespace, key: str, seed: int) -> dict:
    """Train one variant (or reuse a finished run with the identical configuration)."""
    desc, overrides = VARIANTS[key]
    out = Path(args.out) / f"{key}-seed{seed}"
    cfg = base_config(args, out, seed, overrides)
    done = out / "export" / "metrics.json"
    saved = out / "export" / "training_config.json"
    if args.reuse and done.exists() and json.loads(saved.read_text()) == config_to_dict(cfg):
        info = json.loads((out / "timing.json").read_text())
    else:
        w0, c0 = time.perf_counter(), time.process_time()
        train(cfg)
        info = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
        (out / "timing.json").write_text(json.dumps(info))
    metrics = json.loads(done.read_text())
    terms = ("ece_heldout", "mlm", "family", "superfamily", "commu", "tokens")
    return {"variant": key, "description": desc, "objective": cfg.objective, "seed": seed, "config": cfg,
            "export": str(out / "export"), "splits": str(out / "splits.tsv"), **info,
            **{k: metrics.get(k, float("nan")) for k in terms}}


def labelled_corpus(data: str, splits_path: str) -> pd.DataFrame:
    """The corpus with the run's split and its single family (``fam``) and superfamily (``sf``) label."""
    df = read_corpus(data)
    split = pd.read_csv(splits_path, sep="\t", dtype=str)
    if not split["id"].equals(df["id"]):
        raise RuntimeError(f"{splits_path} does not list the corpus in order")
    df["split"] = split["split"].to_numpy()
    if (df["family"].map(len).gt(1) | df["superfamily"].map(len).gt(1)).any():
        raise RuntimeError(f"{data}: several labels in one cell; this benchmark assumes one per level")
    if df["family"].map(len).ne(df["superfamily"].map(len)).any():
        raise RuntimeError(f"{data}: a protein labelled at one level only; this benchmark assumes both or none")
    df["fam"] = df["family"].map(lambda v: v[0] if v else "")
    df["sf"] = df["superfamily"].map(lambda v: v[0] if v else "")
    return df


def eval_sets(df: pd.DataFrame, max_seen: int, max_unseen: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seen-family (ece_holdout) and unseen-superfamily (label_holdout) evaluation sequences."""
    train_fams = set(df.loc[df["split"].eq("train"), "fam"]) - {""}
    rng = np.random.default_rng(0)
    seen = df[df["split"].eq("ece_holdout") & df["fam"].isin(train_fams)]
    unseen = df[df["split"].eq("label_holdout") & df["fam"].str.startswith("cath:")]
    seen = seen.iloc[np.sort(rng.choice(len(seen), min(max_seen, len(seen)), replace=False))]
    unseen = unseen.iloc[np.sort(rng.choice(len(unseen), min(max_unseen, len(unseen)), replace=False))]
    return seen.reset_index(drop=True), unseen.reset_index(drop=True)


def chance_levels(df: pd.DataFrame, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """L_family / L_superfamily of an uninformative model, log(#candidate nodes); families visited.

    In-batch softmax: averaged over the run's own steps (the trainer's step plan, labels as in the
    corpus, where a labelled protein has both levels); full softmax: log(#nodes).
    """
    tr = df[df["split"].eq("train")].reset_index(drop=True)
    lengths = np.minimum(tr["sequence"].str.len().to_numpy(), args.crop) + 2
    labels = {"family": tr["fam"].to_numpy(), "superfamily": tr["sf"].to_numpy()}
    logs: dict[str, list[float]] = {k: [] for k in labels}
    visited: set[str] = set()
    epoch = 0
    while len(logs["family"]) < args.steps:
        for step in plan_epoch(lengths, args.max_tokens, 1, seed, epoch)[: args.steps - len(logs["family"])]:
            for k, lab in labels.items():
                logs[k].append(np.log(max(1, len(set(lab[step]) - {""}))))
            visited |= set(labels["family"][step])
        epoch += 1
    out = {f"batch_{k}": float(np.mean(v)) for k, v in logs.items()}
    out.update({f"full_{k}": float(np.log(len(set(lab) - {""}))) for k, lab in labels.items()})
    out["families_visited"], out["families"] = len(visited - {""}), len(set(labels["family"]) - {""})
    return out


def embed(model, frame: pd.DataFrame, crop: int) -> np.ndarray:
    """Mean-pooled last layer of the first ``crop`` residues (the window the models were trained on)."""
    from protlens.pp import embed_sequences

    res = embed_sequences(model, [s[:crop] for s in frame["sequence"]], layers=(-1,), pooling="mean",
                          max_tokens=8192, device="cpu", progress=False)
    return np.asarray(next(iter(res.pooled.values())), dtype=np.float64)


def scores(emb_seen: np.ndarray, emb_unseen: np.ndarray, seen: pd.DataFrame, unseen: pd.DataFrame,
           prefix: str = "") -> dict:
    """1-NN leave-one-out accuracy on seen families/superfamilies, Hit@1/5 on unseen superfamilies (cosine).

    1-NN leave-one-out accuracy over the queries that have a partner is Hit@1 with the query excluded.
    """
    out: dict[str, float] = {}
    for level in ("fam", "sf"):
        hits, n = labelled_hit_at_k(emb_seen, seen[level], ks=(1,))
        out[f"{prefix}seen_{level}_knn1"], out[f"seen_{level}_n"] = hits[1], n
    hits, n = labelled_hit_at_k(emb_unseen, unseen["fam"], ks=(1, 5))
    out[f"{prefix}unseen_hit1"], out[f"{prefix}unseen_hit5"], out["unseen_n"] = hits[1], hits[5], n
    return out


def representation_metrics(plm, seen: pd.DataFrame, unseen: pd.DataFrame, crop: int,
                           export: Path | None = None) -> dict:
    """Scores of the last layer and, for graph runs, of the clustering-head space the loss shapes."""
    t0 = time.perf_counter()
    emb_seen, emb_unseen = embed(plm, seen, crop), embed(plm, unseen, crop)
    out = scores(emb_seen, emb_unseen, seen, unseen)
    head = load_cluster_head(export, plm.hidden_size) if export is not None else None
    if head is not None:
        with torch.no_grad():
            z_seen, z_unseen = (head(torch.as_tensor(e, dtype=torch.float32)).double().numpy()
                                for e in (emb_seen, emb_unseen))
        out.update(scores(z_seen, z_unseen, seen, unseen, prefix="head_"))
    out["eval_s"] = time.perf_counter() - t0
    return out


def node_displacement(cfg: TrainConfig, plm, export: Path) -> dict[str, float]:
    """||final - initial|| / ||initial|| of each node table: how far training moved the nodes.

    The initial tables are redrawn exactly as the trainer draws them (``seed + 1``, then ComproModule).
    """
    from safetensors.torch import load_file

    from protlens.train.module import ComproModule

    path = Path(export) / "protlens_heads.safetensors"
    if not path.exists():
        return {}
    final = load_file(str(path))
    hf = plm.hf  # built before seeding: building it draws random numbers
    torch.manual_seed(cfg.seed + 1)
    init = ComproModule(hf, len(final["family_nodes"]), len(final["superfamily_nodes"]), cfg.cluster_dim,
                        cfg.objective, head=cfg.cluster_head)
    out = {}
    for k in ("family", "superfamily"):
        start = getattr(init, f"{k}_nodes").detach()
        out[f"move_{k}"] = float((final[f"{k}_nodes"].float() - start).norm() / start.norm())
    return out


def cached(path: Path, key: dict, compute) -> dict:
    """``compute()``, or its earlier result stored in ``path`` under the same ``key``."""
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["value"]
    value = compute()
    path.write_text(json.dumps({"key": key, "value": value}))
    return value


def fmt(x, digits: int = 3) -> str:
    if isinstance(x, str):
        return x
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def training_table(rows: list[dict]) -> str:
    return _md(["variant", "seed", "held-out ECE", "L_mlm", "L_family", "L_superfamily", "L_commu",
                "family nodes moved", "superfamily nodes moved", "train wall s", "train CPU s"],
               [[f"{r['variant']}: {r['description']}", str(r["seed"]), fmt(r["ece_heldout"], 2), fmt(r["mlm"])]
                + [fmt(r[k]) if "graph" in r["objective"] else "-" for k in ("family", "superfamily", "commu")]
                + [fmt(r.get(k, float("nan"))) for k in ("move_family", "move_superfamily")]
                + [fmt(r["wall_s"], 0), fmt(r["cpu_s"], 0)]
                for r in rows if r["variant"] != "ref"])


def representation_table(rows: list[dict]) -> str:
    keys = ["seen_fam_knn1", "seen_sf_knn1", "unseen_hit1", "unseen_hit5"]
    return _md(["variant", "seed", "seen fam 1-NN", "seen sf 1-NN", "unseen SF Hit@1", "unseen SF Hit@5",
                "head: seen fam 1-NN", "head: seen sf 1-NN", "head: unseen Hit@1", "head: unseen Hit@5"],
               [[f"{r['variant']}: {r['description']}", str(r["seed"])]
                + [fmt(r.get(k)) for k in keys] + [fmt(r.get("head_" + k, float("nan"))) for k in keys]
                for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/pretrain/corpus.tsv")
    ap.add_argument("--out", default="/tmp/loss_variants")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeat", default="b,c", help="variants also trained with --repeat-seeds")
    ap.add_argument("--repeat-seeds", default="", help="comma-separated extra seeds, e.g. 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ece-seqs", type=int, default=512)
    ap.add_argument("--eval-seen", type=int, default=2500, help="at most this many ece_holdout sequences")
    ap.add_argument("--eval-unseen", type=int, default=2500, help="at most this many label_holdout domains")
    ap.add_argument("--references", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate the untrained network and the 3-mer baseline")
    ap.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=True,
                    help="reuse finished runs in --out whose configuration is identical")
    ap.add_argument("--summary", type=Path, default=None, help="also write the summary row(s) of BENCHMARKS.md here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    jobs = [(v, args.seed) for v in args.variants.split(",") if v]
    extra = [int(s) for s in args.repeat_seeds.split(",") if s]
    jobs += [(v, s) for s in extra for v in args.repeat.split(",") if v and v in args.variants.split(",")]
    from protlens.models import EsmPLM, load_model

    rows, seen, unseen = [], None, None
    for key, seed in jobs:
        row = run_variant(args, key, seed)
        if seen is None:
            corpus = labelled_corpus(args.data, row["splits"])
            seen, unseen = eval_sets(corpus, args.eval_seen, args.eval_unseen)
            print(f"eval sets: {len(seen)} ece_holdout sequences of training families, "
                  f"{len(unseen)} label_holdout CATH domains", flush=True)
        elif Path(row["splits"]).read_text() != Path(rows[0]["splits"]).read_text():
            raise RuntimeError(f"splits differ between {rows[0]['splits']} and {row['splits']}")
        export = Path(row["export"])
        plm = load_model(str(export))
        key = {"eval_seen": args.eval_seen, "eval_unseen": args.eval_unseen, "crop": args.crop,
               "model_sha256": file_sha256(export / "model.safetensors")}
        row.update(cached(export.parent / "eval.json", key,
                          lambda: representation_metrics(plm, seen, unseen, args.crop, export)))
        row.update(node_displacement(row.pop("config"), plm, export))
        rows.append(row)
        print(training_table([row]).splitlines()[-1], representation_table([row]).splitlines()[-1],
              f"(eval {row['eval_s']:.0f} s)", flush=True)
    if args.references and seen is not None:
        cfg = base_config(args, Path(args.out) / "untrained", args.seed, {})
        refs = [("untrained network (seed init)", EsmPLM(build_backbone(cfg), "untrained", "scratch")),
                ("3-mer composition", load_model("kmer"))]
        for desc, model in refs:
            row = {"variant": "ref", "description": desc, "seed": args.seed if "untrained" in desc else "-"}
            row.update(representation_metrics(model, seen, unseen, args.crop))
            rows.append(row)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"\nmodel {args.layers}x{args.hidden} ({args.heads} heads), from scratch, crop {args.crop}, "
          f"{args.max_tokens} padded tokens/step, {args.steps} steps, AdamW lr {args.lr} (cosine, "
          f"{max(1, args.steps // 10)} warm-up), w 0.2, 1 thread")
    print(f"seen: {seen['fam'].nunique()} families / {len(seen)} ece_holdout seqs "
          f"(1-NN over {rows[0]['seen_fam_n']} fam / {rows[0]['seen_sf_n']} sf queries with a partner); "
          f"unseen: {unseen['fam'].nunique()} held-out CATH superfamilies / {len(unseen)} domains "
          f"({rows[0]['unseen_n']} queries with a partner)")
    for seed in [args.seed] + extra:
        c = chance_levels(corpus, args, seed)
        print(f"chance level (seed {seed} step plan): batch softmax L_family {c['batch_family']:.3f}, "
              f"L_superfamily {c['batch_superfamily']:.3f}; full softmax L_family {c['full_family']:.3f}, "
              f"L_superfamily {c['full_superfamily']:.3f} (temperature-independent); {c['families_visited']} of "
              f"{c['families']} training families have a member in the run's steps")
    print(training_table(rows))
    print()
    print(representation_table(rows))
    if args.summary:
        write_summary(args.summary, summary_rows(rows, args.seed))


if __name__ == "__main__":
    main()
