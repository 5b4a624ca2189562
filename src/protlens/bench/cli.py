"""``protlens bench``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError


def parse_sizes(items: list[str] | None) -> dict[str, int]:
    """``['enzymes=300', 'scop_domains=500']`` -> {'enzymes': 300, 'scop_domains': 500}."""
    out = {}
    for item in items or []:
        key, _, val = item.partition("=")
        try:
            out[key.strip()] = int(val)
        except ValueError:
            raise InputError(f"--size '{item}': expected NAME=INTEGER, e.g. enzymes=300") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        model: list[str] = typer.Option(..., "--model", "-m", help="Model name or path; repeat for several. "
                                        "'random:<arch or path>' = random-init transformer of that architecture."),
        tasks: list[str] = typer.Option(["all"], "--tasks", "-t", help="'all' or task names (repeat or "
                                        "comma-separate): ece, family, mutation, activity, ppi, function, homology, "
                                        "similarity, figures."),
        out: Path = typer.Option(..., "-o", "--out",
                                 help="Output folder (results.csv, results.md, splits/, figures/)."),
        smoke: bool = typer.Option(False, help="Tiny subsets of every task (seconds; for CI)."),
        seed: int = typer.Option(0, help="Seed of every split and subsample."),
        data: Path = typer.Option(None, help="Benchmark data folder (default $PROTLENS_BENCH_DATA or ../shared/data)."),
        heldout: Path = typer.Option(None, help="ECE held-out set: FASTA, or ids (one per line / first TSV column) "
                                     "of corpus.tsv, e.g. the split a model was trained without."),
        scoring: str = typer.Option("masked-marginals", help="Mutation scoring: masked-marginals, wt-marginals "
                                    "or pseudo-likelihood."),
        size: list[str] = typer.Option(None, "--size", help="Override a subsample size, NAME=INT (repeatable)."),
        max_tokens: int = typer.Option(4096, help="Padded-token budget per forward batch."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
        keep_training_data: bool = typer.Option(False, "--keep-training-data", help="Do not exclude the models' "
                                                "training proteins from the test sets (default: excluded, per task "
                                                "counts in results.md)."),
        pca_cap: int = typer.Option(0, help="Principal components kept before each supervised probe "
                                    "(0 = none; e.g. 256 to speed up large k-mer profiles)."),
        fast: bool = typer.Option(False, "--fast", help="Subsample each mutation assay to mut_positions positions "
                                  "(labelled in the results); default: full assays."),
        through_head: bool = typer.Option(False, "--through-head", help="Embed through each model's trained "
                                          "clustering head (protlens train exports with a graph objective)."),
    ) -> None:
        """Run the downstream benchmark suite (frozen embeddings) and write one comparison table."""
        from .._lock import output_lock
        from .._preflight import check_device, check_outputs, check_range
        from .runner import run_bench

        check_outputs({"-o": out}, inputs={"--heldout": heldout}, folders={"-o"})
        check_range("--max-tokens", max_tokens, 8)
        check_range("--seed", seed, 0)
        check_range("--pca-cap", pca_cap, 0)
        check_device(device)
        with output_lock(out, parents=True):
            df = run_bench(model, tasks, out, smoke=smoke, seed=seed, data_dir=data, heldout=heldout,
                           scoring=scoring, max_tokens=max_tokens, device=device, sizes=parse_sizes(size),
                           exclude_training=not keep_training_data, pca_cap=pca_cap, fast=fast,
                           through_head=through_head)
        typer.echo(f"wrote {out / 'results.csv'} and {out / 'results.md'} ({len(df)} rows)")
