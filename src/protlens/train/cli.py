"""``protlens train``, ``protlens distill`` and ``protlens toy-cpbc``."""

from __future__ import annotations

from pathlib import Path

import typer

from .._lock import job_lock
from .._preflight import check_outputs
from .config import DistillConfig, TrainConfig, config_help, make_config, parse_flag_overrides

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def _split_args(args: list[str]) -> tuple[Path | None, list[str]]:
    """``[CONFIG] --key value ...``: the optional config file comes first, flags override it."""
    if args and not args[0].startswith("--"):
        return Path(args[0]), args[1:]
    return None, args


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings=_EXTRA, options_metavar="[CONFIG] [--key value ...]", help=(
        "Train or resume a protein language model (masked LM and/or family clustering).\n\n"
        "CONFIG is a TOML or YAML file; every key is also a flag that overrides it, e.g. "
        "--objective mlm --lr 1e-4 --max-steps 100. Launch under torchrun or accelerate launch for "
        "several GPUs or nodes. Options:\n\n" + config_help(TrainConfig).replace("\n", "\n\n")))
    def train_cmd(ctx: typer.Context) -> None:
        from .._ece import describe
        from .trainer import train

        config, flags = _split_args(list(ctx.args))
        cfg = make_config(TrainConfig, config, parse_flag_overrides(TrainConfig, flags))
        check_outputs({"--out-dir": cfg.out_dir}, inputs={"CONFIG": config}, folders={"--out-dir"})
        with job_lock(cfg.out_dir):
            res = train(cfg)
        if res.export_dir is not None:
            typer.echo(f"trained {res.step} optimizer steps ({res.tokens:,} tokens); held-out masked-token ECE "
                       f"{describe(res.metrics.get('ece_heldout', float('nan')))}; model in {res.export_dir}")

    @app.command("distill", context_settings=_EXTRA, options_metavar="[CONFIG] [--key value ...]", help=(
        "TinyBERT-style distillation of a teacher into a smaller ESM-2 student (an ordinary checkpoint).\n\n"
        "Options:\n\n" + config_help(DistillConfig).replace("\n", "\n\n")))
    def distill_cmd(ctx: typer.Context) -> None:
        from .._ece import describe
        from .distill import distill

        config, flags = _split_args(list(ctx.args))
        cfg = make_config(DistillConfig, config, parse_flag_overrides(DistillConfig, flags))
        check_outputs({"--out-dir": cfg.out_dir}, inputs={"CONFIG": config}, folders={"--out-dir"})
        with job_lock(cfg.out_dir):
            res = distill(cfg)
        typer.echo(f"distilled {res.step} optimizer steps; held-out masked-token ECE: student "
                   f"{describe(res.metrics.get('ece_heldout', float('nan')))}, teacher "
                   f"{res.metrics.get('teacher_ece_heldout', float('nan')):.2f}; model in {res.export_dir}")

    @app.command("toy-cpbc")
    def toy_cmd(out: Path = typer.Option(..., "--out", help="Figure file (.png/.pdf/.svg)."),
                n_points: int = typer.Option(120), n_fine: int = typer.Option(30), n_coarse: int = typer.Option(10),
                w: float = typer.Option(0.2, help="Fine (family) weight."),
                steps: int = typer.Option(2000, help="Full-batch optimisation steps."),
                score: str = typer.Option("dot", help="dot (published inner product) or sqdist."),
                seed: int = typer.Option(0)) -> None:
        """The paper's 2-D illustration of community-propagation clustering (Fig. 5)."""
        from .toy import plot_toy, toy_cpbc

        res = toy_cpbc(n_points=n_points, n_fine=n_fine, n_coarse=n_coarse, w=w, steps=steps, score=score,
                       random_state=seed)
        plot_toy(res, out)
        typer.echo(f"wrote {out}; nearest fine-centre purity {res.fine_purity:.3f}, coarse "
                   f"{res.coarse_purity:.3f} (Euclidean-nearest fine centre: {res.fine_purity_euclidean:.3f})")
