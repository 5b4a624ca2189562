"""Run the downstream tasks for several models and write one comparison table (models as rows).

Outputs in ``out``: ``results.csv`` (one row per model, task and metric, with seconds and notes),
``results.md`` (a Table-1-like summary, the training data kept out of each task (bench.leakage), one
table per task, skips and timings), the splits
(``splits/``), figures (``figures/``) and ``mutation_skipped.tsv``. Model-independent baselines
(uniform / unigram / 4-gram ECE, BLOSUM62 mutation scores) appear as extra rows ``baseline:*``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .._progress import track
from ..errors import InputError
from ..models import ESM2_ARCHS, EsmPLM, KmerEmbedder, esm2_config, load_model
from . import activity, ece, family, figures, function, homology, mutation, ppi, similarity
from ._common import SIZES, BenchModel, Context, Row, default_data_dir, skipped
from .leakage import Leakage, report_lines

TASKS = {
    "ece": ece, "family": family, "mutation": mutation, "activity": activity, "ppi": ppi,
    "function": function, "homology": homology, "similarity": similarity, "figures": figures,
}
#: The one or two numbers per task shown in the summary table (Table 1 of the paper, widened).
HEADLINE = [
    ("ece", "ece", "ECE (lower better)"), ("family", "ec3_acc", "EC3 acc"), ("family", "cath_acc", "CATH acc"),
    ("family", "tenfam_test_acc", "10-fam test acc"), ("mutation", "spearman_mean", "Mut. Spearman"),
    ("activity", "mse_ridge", "Act. MSE (ridge)"), ("activity", "spearman_ridge", "Act. Spearman"),
    ("ppi", "shs27k_random_acc", "PPI acc (random)"), ("ppi", "shs27k_disjoint_acc", "PPI acc (disjoint)"),
    ("function", "mc4_acc", "Func. 4-choice"), ("function", "nn_ec4_acc", "NN EC4"),
    ("homology", "sf_hit10", "SF-Hit@10"), ("homology", "fold_hit10", "F-Hit@10"),
    ("similarity", "auroc", "Same-fam AUROC"),
]
#: Stands for "the sequence baselines of a task" in the run's list of (model, task) units.
BASELINES = "sequence baselines"
COLUMNS = ["model", "task", "metric", "value", "n", "seconds", "note"]


def resolve_tasks(tasks: str | Sequence[str]) -> list[str]:
    """``'all'`` or names (comma-separated strings allowed) -> task names in canonical order."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    names = [t.strip() for item in names for t in item.split(",") if t.strip()]
    if not names or "all" in names:
        return list(TASKS)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise InputError(f"unknown task '{unknown[0]}' (choose from all, {', '.join(TASKS)})")
    return [t for t in TASKS if t in names]


def random_init_model(target: str, seed: int = 0) -> EsmPLM:
    """A freshly initialised ESM-2 with the architecture of ``target`` (hub name or any loadable model)."""
    if target in ESM2_ARCHS:
        layers, hidden, heads = ESM2_ARCHS[target]
        inter = None
    else:
        ref = load_model(target)
        if not isinstance(ref, EsmPLM):
            raise InputError(f"model 'random:{target}': '{target}' has no transformer architecture to copy")
        cfg = ref.hf.config
        layers, hidden, heads, inter = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                                        cfg.intermediate_size)
    from transformers import EsmForMaskedLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        hf = EsmForMaskedLM(esm2_config(layers, hidden, heads, intermediate_size=inter)).eval()
    return EsmPLM(hf, f"random:{target}", f"random-init(seed={seed}):{target}")


def resolve_model(name: str, seed: int = 0) -> EsmPLM | KmerEmbedder:
    """``random:<arch or model>`` for a random-init baseline, anything :func:`load_model` takes otherwise."""
    if name.startswith("random:"):
        return random_init_model(name[len("random:"):], seed)
    return load_model(name)


def run_bench(models: Sequence[str], tasks: str | Sequence[str] = "all", out: str | Path = "bench",
              smoke: bool = False, seed: int = 0, data_dir: str | Path | None = None,
              heldout: str | Path | None = None, scoring: str = "masked-marginals", max_tokens: int = 4096,
              device: str = "auto", sizes: dict[str, int] | None = None, baselines: bool = True,
              progress: bool = True, exclude_training: bool = True, pca_cap: int = 0,
              fast: bool = False, through_head: bool = False,
              exclude_training_of: Sequence[str] = ()) -> pd.DataFrame:
    """Run ``tasks`` for every model (frozen), write DIR/results.csv and DIR/results.md, return the rows.

    ``exclude_training``: keep every given model's training proteins out of the test pools (models
    without training metadata are listed as "leakage unknown"; ``exclude_training_of`` adds models not
    run here, so a run of one baseline uses the same test pools as a run of a trained model); ``pca_cap``: principal components
    before each supervised probe (0 = none); ``fast``: subsample the mutation assays; ``through_head``:
    embed through each model's trained clustering head where it has one (others: plain embeddings).
    """
    from ..pp._embed import resolve_device

    if not models:
        raise InputError("give at least one --model")
    task_names = resolve_tasks(tasks)
    if scoring not in mutation.STRATEGIES:
        raise InputError(f"unknown scoring '{scoring}' (choose from {', '.join(mutation.STRATEGIES)})")
    if heldout is not None and not Path(heldout).exists():
        raise InputError(f"--heldout {heldout}: no such file")
    unknown_sizes = sorted(set(sizes or {}) - set(SIZES["default"]))
    if unknown_sizes:
        raise InputError(f"unknown subsample size '{unknown_sizes[0]}' (choose from {', '.join(SIZES['default'])})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, data_dir=Path(data_dir) if data_dir else default_data_dir(), seed=seed, smoke=smoke,
                  heldout=Path(heldout) if heldout else None, scoring=scoring, max_tokens=max_tokens,
                  device=str(resolve_device(device)), sizes=dict(sizes or {}), pca_cap=pca_cap, fast=fast,
                  leakage=Leakage.from_models(list(dict.fromkeys([*models, *exclude_training_of])))
                  if exclude_training else None)
    if not ctx.data_dir.exists():
        raise InputError(f"benchmark data folder {ctx.data_dir} does not exist (pass --data)")
    records: list[dict] = []
    embedding_notes: dict[str, str] = {}

    def log(msg: str) -> None:
        if progress:
            print(f"[bench] {msg}", flush=True)

    def add(model: str, rows: list[Row], seconds: float) -> None:
        for r in rows:
            records.append(dict(model=model, task=r.task, metric=r.metric, value=r.value, n=r.n,
                                seconds=round(seconds, 2), note=r.note))

    # one flat list of (model, task) units, so that one bar with a time estimate covers the whole run
    units = [(BASELINES, t) for t in task_names if baselines and getattr(TASKS[t], "baselines", None) is not None]
    units += [(name, t) for name in models for t in task_names]
    loaded: dict[str, BenchModel] = {}
    for name, t in track(units, "bench", enabled=progress, label=lambda u: f"{u[0]} / {u[1]}"):
        t0 = time.perf_counter()
        if name == BASELINES:
            result = TASKS[t].baselines(ctx)
            dt = time.perf_counter() - t0
            for base, rows in result.items():
                add(f"baseline:{base}", rows, dt / len(result))
            log(f"baselines of {t}: {dt:.1f} s")
            continue
        if name not in loaded:
            loaded.clear()  # one model in memory at a time
            plm = resolve_model(name, seed)
            if isinstance(plm, EsmPLM):
                plm.to(ctx.device)
            head = model_head(name, plm) if through_head else None
            if through_head:
                embedding_notes[name] = ("pooled embeddings mapped through its trained clustering head"
                                         if head is not None else "no clustering head: plain mean-pooled last layer")
            loaded[name] = BenchModel(name, plm, max_tokens=max_tokens, device=ctx.device, head=head)
            log(f"{name}: loaded in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
        bm = loaded[name]
        if t == "ece" and getattr(bm.model, "autoregressive", False):
            rows = skipped(t, "not applicable: a left-to-right model (UniRep) makes no masked-token predictions")
        else:
            rows = TASKS[t].run(ctx, bm)
        dt = time.perf_counter() - t0
        add(name, rows, dt)
        log(f"{name} / {t}: {dt:.1f} s ({bm.residues_embedded:,} residues embedded so far)")
    df = pd.DataFrame(records, columns=COLUMNS)
    df.attrs["excluded"] = dict(ctx.excluded)  # per pool (removed, kept), for reports that merge several runs
    df.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(markdown_report(df, ctx, list(models), task_names, embedding_notes))
    return df


def model_head(name: str, plm) -> torch.nn.Module | None:
    """The clustering head exported with a model folder (bundled or a path), if it has one."""
    from ..models import BUNDLED, bundled_path
    from ..train.module import load_cluster_head

    if not isinstance(plm, EsmPLM):
        return None
    folder = bundled_path(name) if name in BUNDLED else Path(name).expanduser()
    return load_cluster_head(folder, plm.hidden_size) if folder.is_dir() else None


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def _table(frame: pd.DataFrame, index: list[str], columns: list[str]) -> str:
    lines = ["| " + " | ".join(["model", *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for idx in index:
        lines.append("| " + " | ".join([idx, *(_fmt(frame.loc[idx, c]) if idx in frame.index and c in frame.columns
                                               else "–" for c in columns)]) + " |")
    return "\n".join(lines)


def markdown_report(df: pd.DataFrame, ctx: Context, models: list[str], tasks: list[str],
                    embedding_notes: dict[str, str] | None = None) -> str:
    """Summary table (models as rows), leakage, per-task tables, skips and timings."""
    ok = df[df["metric"] != "skipped"]
    order = [m for m in dict.fromkeys(df["model"]) if m.startswith("baseline:")] + models
    wide = ok.assign(col=ok["task"] + "/" + ok["metric"]).pivot_table(index="model", columns="col", values="value",
                                                                      aggfunc="first", dropna=False)
    head = [(f"{t}/{m}", label) for t, m, label in HEADLINE if t in tasks]
    summary = wide.reindex(columns=[c for c, _ in head]).rename(columns=dict(head))
    parts = [
        "## Summary (models as rows; – = not applicable or skipped)", "",
        f"seed {ctx.seed}; {'smoke subsets' if ctx.smoke else 'default subsets'}: "
        + ", ".join(f"{k}={v}" for k, v in ctx.sizes.items())
        + f"; supervised probes on {f'at most {ctx.pca_cap} principal components' if ctx.pca_cap else 'all dimensions'}"
        + f"; mutation: {mutation.scope(ctx)}", "",
        _table(summary, order, [label for _, label in head]), "",
        *report_lines(ctx, models, tasks),
    ]
    if embedding_notes:
        parts += ["### Embeddings (--through-head)", "", *(f"- {m}: {n}" for m, n in embedding_notes.items()), ""]
    for t in tasks:
        sub = ok[ok["task"] == t]
        if sub.empty:
            continue
        metrics = list(dict.fromkeys(sub["metric"]))
        per = sub.pivot_table(index="model", columns="metric", values="value", aggfunc="first", dropna=False)
        parts += [f"### {t}", "", _table(per, [m for m in order if m in per.index], metrics), ""]
    skips = df[df["metric"] == "skipped"]
    if len(skips):
        parts += ["### Skipped", ""] + [f"- {r.model} / {r.task}: {r.note}" for r in skips.itertuples()] + [""]
    times = df.groupby(["model", "task"], sort=False)["seconds"].first().unstack()
    parts += ["### Seconds per model and task", "",
              _table(times, [m for m in order if m in times.index], list(times.columns)), ""]
    return "\n".join(parts)
