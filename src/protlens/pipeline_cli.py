"""``protlens run`` and ``protlens demo``: the whole pipeline from one command."""

from __future__ import annotations

from pathlib import Path

import typer

from .errors import InputError


def split_list(text: str, what: str) -> list[str]:
    """'kmeans,spectral' -> ['kmeans', 'spectral']; 'none' -> []."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if items == ["none"]:
        return []
    if not items:
        raise InputError(f"--{what}: give a comma-separated list (or 'none')")
    return items


def parse_k(text: str) -> int | str:
    """--n-clusters: a number, 'auto' or 'labels'."""
    if text in ("auto", "labels"):
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--n-clusters '{text}': expected a number, 'auto' or 'labels'") from None


def _done(adata, out: Path) -> None:
    info = adata.uns["pipeline"]
    rejected = int(info.get("n_rejected", 0))
    typer.echo(f"wrote {out}/report.html, result.h5ad, metrics.csv and figures/ ({adata.n_obs} sequences, "
               f"model {info['params']['model']}, {float(info['seconds']):.0f} s)"
               + (f"; {rejected} record(s) set aside in {out}/rejected.tsv" if rejected else ""))


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        input: Path = typer.Argument(..., help="FASTA (.gz ok), CSV/TSV with id and sequence columns, "
                                     "or an embedded .h5ad."),
        labels: Path = typer.Option(None, help="CSV/TSV of labels joined by id (optional: works without labels)."),
        label_col: str = typer.Option(None, help="Label column to score against (needed if the table has several)."),
        id_col: str = typer.Option(None, help="Id column of the labels table (default: auto-detected)."),
        model: str = typer.Option(None, help="Model name or path (default: the best model shipped with protlens)."),
        methods: str = typer.Option("kmeans,spectral,leiden", help="Comma-separated: kmeans, spectral, leiden, "
                                    "agglomerative, hdbscan."),
        n_clusters: str = typer.Option("auto", help="A number, 'auto' (each method chooses) or 'labels' "
                                       "(the number of labelled classes)."),
        out: Path = typer.Option(Path("protlens_out"), "-o", "--out", help="Output folder."),
        projection: str = typer.Option("tsne", help="2-D map: tsne, umap or pca."),
        random_state: int = typer.Option(0, help="Seed for every random step."),
        baselines: str = typer.Option("kmer,alignment,mmseqs", help="Sequence baselines scored next to the model "
                                      "(kmer, kmer123, alignment, mmseqs) or 'none'; only with labels."),
        n_neighbors: int = typer.Option(15, help="Neighbours in the kNN graph (spectral, Leiden)."),
        n_boot: int = typer.Option(200, help="Random half-samples for the ARI/NMI 95% intervals (0: none)."),
        strip_gaps: bool = typer.Option(False, help="Remove '-' and '.' instead of rejecting them."),
        skip_invalid: bool = typer.Option(False, help="Set bad records (invalid characters, duplicate ids, "
                                          "unusable embeddings) aside in OUT/rejected.tsv and go on."),
        progress: bool = typer.Option(True, help="Show progress (a bar or a running clock) for each long step."),
    ) -> None:
        """Embed, cluster, project and score sequences; write a self-contained HTML report."""
        from ._lock import output_lock
        from ._preflight import check_outputs, check_range
        from .io import read_h5ad
        from .pipeline import run

        check_outputs({"-o": out}, inputs={"input": input, "--labels": labels}, folders={"-o"})
        check_range("--n-boot", n_boot, 0)
        check_range("--random-state", random_state, 0)
        check_range("--n-neighbors", n_neighbors, 1)
        with output_lock(out, parents=True):
            source = read_h5ad(input) if input.suffix == ".h5ad" else input
            adata = run(source, labels=labels, label_col=label_col, id_col=id_col, model=model,
                        methods=split_list(methods, "methods"), n_clusters=parse_k(n_clusters), out=out,
                        projection=projection, random_state=random_state,
                        baselines=split_list(baselines, "baselines"), n_neighbors=n_neighbors, n_boot=n_boot,
                        strip_gaps=strip_gaps, progress=progress, skip_invalid=skip_invalid)
        _done(adata, out)

    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("protlens_demo"), "-o", "--out", help="Output folder."),
        model: str = typer.Option(None, help="Model (default: the best model shipped with protlens)."),
        random_state: int = typer.Option(0, help="Seed for the simulation and every random step."),
        progress: bool = typer.Option(True, help="Show progress (a bar or a running clock) for each long step."),
    ) -> None:
        """Run the pipeline on built-in synthetic protein families (offline, about a minute)."""
        from .pipeline import demo

        adata = demo(out=out, model=model, random_state=random_state, progress=progress)
        _done(adata, out)
