"""``protlens embed``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InputError


def parse_layers(text: str) -> list[int]:
    """'-1' or '6,12,-1' -> [ints] (at least one)."""
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise InputError(f"--layers '{text}': expected comma-separated integers such as -1 or 6,12,-1")
    return layers


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_cmd(
        input: Path = typer.Argument(..., help="FASTA (.gz ok) or CSV/TSV with id and sequence columns."),
        out: Path = typer.Option(..., "-o", "--out", help="Output .h5ad."),
        model: str = typer.Option(None, help="Model name or path (default: the best bundled model)."),
        layers: str = typer.Option("-1", help="Comma-separated layers; X gets the first, obsm the rest."),
        pooling: str = typer.Option(None, help="mean (over residues only; the default) or bos; UniRep: h_avg "
                                    "(its default), final_h, final_c, fusion (all three) or mean."),
        per_residue: Path = typer.Option(None, "--per-residue", help="Also write per-residue states to this HDF5."),
        max_tokens: int = typer.Option(None, help="Padded-token budget per batch (default: 1024 on CPU, "
                                        "4096 on GPU)."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
        dtype: str = typer.Option("fp32", help="fp32, bf16, fp16 (reduced precision on GPU) or int8 "
                                  "(CPU: int8 linear layers; speed and error in BENCHMARKS.md)."),
        truncate: bool = typer.Option(False, help="Keep only the first window of long sequences (like fair-esm)."),
        window: int = typer.Option(None, help="Residues per window (default: the model's limit, 1022 for ESM-2)."),
        overlap: int = typer.Option(256, help="Residues shared by consecutive windows."),
        labels: Path = typer.Option(None, help="CSV/TSV of labels joined into obs by id."),
        id_col: str = typer.Option(None, help="Id column of the labels file."),
        strip_gaps: bool = typer.Option(False, help="Remove '-' and '.' instead of rejecting them."),
        checkpoint_every: float = typer.Option(30.0, help="Seconds between progress checkpoints (resume on rerun)."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
        engine: str = typer.Option("local", help="local (this process) or ray (an actor pool on a Ray cluster)."),
        address: str = typer.Option(None, help="Ray: cluster address ('auto' joins a running one; "
                                    "default: start a local one)."),
        num_workers: int = typer.Option(2, help="Ray: model replicas (actors)."),
        gpus_per_worker: float = typer.Option(0, help="Ray: GPUs per replica (1 for one GPU each)."),
        cpus_per_worker: float = typer.Option(1, help="Ray: CPU cores per replica (its torch threads)."),
        shard_size: int = typer.Option(None, help="Ray: sequences per shard (default: 16 to 256, >= 64 shards)."),
    ) -> None:
        """Embed sequences into an AnnData file (resumable: rerun the same command after a crash).

        Finished batches are saved in OUT.parts/ and removed only once OUT (and the per-residue file)
        are durably in place; a second process writing the same OUT is refused (OUT.lock).
        """
        from .. import _faults
        from .._lock import output_lock
        from .._preflight import check_outputs, check_range
        from ..io import WriteError, read_input, remove_stray_temps, write_h5ad
        from ..models import default_model_name, load_model
        from ._embed import check_embed_options, embed, remove_progress

        if engine not in ("local", "ray"):
            raise InputError(f"unknown --engine '{engine}' (local or ray)")
        layer_list = parse_layers(layers)
        # Ray workers may have devices this driver lacks: the cluster checks those
        check_embed_options(layer_list, pooling, dtype, device if engine == "local" else "auto", max_tokens, window,
                            overlap, checkpoint_every, truncate)
        check_range("--num-workers", num_workers, 1)
        check_range("--shard-size", shard_size, 1)
        check_outputs({"-o": out, "--per-residue": per_residue}, inputs={"input": input, "--labels": labels})
        parts = Path(str(out) + ".parts")
        with output_lock(out):
            for path in (out, per_residue):
                if path is not None:
                    remove_stray_temps(path)
            adata = read_input(input, labels=labels, id_col=id_col, strip_gaps=strip_gaps)
            if engine == "local":
                plm = load_model(model or default_model_name())
                for layer in layer_list:
                    if hasattr(plm, "resolve_layer"):
                        plm.resolve_layer(layer)  # --layers 99: refused before any batch is computed
                _faults.point("load")
            common = dict(model=plm if engine == "local" else model, layers=layer_list, pooling=pooling, per_residue_file=per_residue,
                          max_tokens=max_tokens, device=device, dtype=dtype, truncate=truncate, window=window,
                          overlap=overlap, progress=progress)
            try:
                if engine == "ray":
                    from ._ray import embed_ray

                    embed_ray(adata, **common, num_workers=num_workers, address=address,
                              gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                              shard_size=shard_size, shard_dir=Path(str(out) + ".shards"))
                else:
                    embed(adata, **common, resume_dir=parts, checkpoint_every=checkpoint_every, keep_progress=True)
                write_h5ad(adata, out)
            except WriteError as e:
                kept = f"; finished batches are kept in {parts}: rerun the same command" if parts.exists() else ""
                raise WriteError(f"{e}{kept}") from None
            _faults.point("written")
            remove_progress(parts)
        typer.echo(f"wrote {out} ({adata.n_obs} sequences x {adata.n_vars} dims, model {adata.uns['embed']['model']})")
