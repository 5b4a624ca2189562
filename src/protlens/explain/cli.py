"""``protlens explain``."""

from __future__ import annotations

from pathlib import Path

import typer


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_cmd(
        result: Path = typer.Argument(..., help="A clustered .h5ad (from protlens embed + cluster)."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder: tracks HDF5, figures, explained .h5ad."),
        clusters: str = typer.Option("spectral", help="obs column with the cluster assignment to explain."),
        methods: str = typer.Option("saliency,grad_x_input,integrated_gradients,smoothgrad",
                                    help="Surrogate attribution methods (aliases: grad, gxi, ig, sg)."),
        plm_methods: str = typer.Option("integrated_gradients", help="Methods for end-to-end attribution through the PLM."),
        end_to_end: bool = typer.Option(True, help="Also attribute through the PLM itself (needs an ESM model)."),
        compare_with: str = typer.Option(None, help="Second clustering (e.g. kmeans): overlap of explanations."),
        motifs: str = typer.Option("auto", help="Plausibility check: auto, kinase, planted or none."),
        per_residue: Path = typer.Option(None, "--per-residue", help="Per-residue HDF5 (default: the one recorded in the h5ad)."),
        layer: int = typer.Option(None, help="Layer of the per-residue embeddings (default: the first embedded)."),
        model: str = typer.Option(None, help="PLM for per-residue embeddings and end-to-end attribution (default: the "
                                  "recorded one; for a k-mer result, protlens-small)."),
        proteins: str = typer.Option(None, help="Comma-separated ids to draw heatmaps for (default: cluster medoids)."),
        epochs: int = typer.Option(40, help="Surrogate CNN training epochs."),
        figures: bool = typer.Option(True, help="Draw heatmaps, residue tracks and cluster consensus PNGs."),
        seed: int = typer.Option(0, help="Random seed (split, CNN, SmoothGrad, permutations)."),
        progress: bool = typer.Option(True, help="Show progress bars with time estimates."),
    ) -> None:
        """Explain cluster assignments residue by residue and measure the explanations."""
        from .._lock import output_lock
        from .._preflight import check_outputs, check_range
        from ..io import read_h5ad, write_h5ad
        from .api import explain

        check_outputs({"-o": out}, inputs={"input": result, "--per-residue": per_residue}, folders={"-o"})
        check_range("--epochs", epochs, 1)
        check_range("--seed", seed, 0)
        with output_lock(out, parents=True):
            adata = read_h5ad(result)
            explain(adata, clusters, out=out, methods=_split(methods), plm_methods=_split(plm_methods) or (),
                    end_to_end=end_to_end, compare_with=compare_with, motifs=motifs, per_residue_file=per_residue,
                    layer=layer, model=model, proteins=_split(proteins), epochs=epochs, figures=figures,
                    random_state=seed, progress=progress, base_dir=Path(result).resolve().parent)
            dest = Path(out) / f"{Path(result).stem}.explained.h5ad"
            write_h5ad(adata, dest)
        s = adata.uns["explain"]["surrogate"]
        flag = "" if s["reliable"] else "; below 90%: explanations flagged unreliable"
        typer.echo(f"wrote {dest} and {adata.uns['explain']['tracks_file']}; surrogate held-out accuracy "
                   f"{s['test_accuracy']:.1%} (majority-cluster chance {s['chance_accuracy']:.1%}{flag}; "
                   f"{float(adata.uns['explain']['seconds']):.0f} s)")
