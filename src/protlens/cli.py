"""The ``protlens`` command line: each subcommand reads files, calls one public function, writes files.

Subcommands of each area live in that area's ``cli.py`` and attach themselves through ``register``.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import typer

from .errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Protein language model embeddings you can cluster, evaluate, explain and train.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Protein language model embeddings you can cluster, evaluate, explain and train."""


#: Modules whose ``register(app)`` adds subcommands (one line per area).
SUBCOMMAND_MODULES = [
    "protlens.bench.cli",
    "protlens.explain.cli",
    "protlens.pipeline_cli",
    "protlens.pp.cli",
    "protlens.train.cli",
]

for _mod in SUBCOMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"protlens: warning: {message}\n"
    try:
        app()
    except InputError as e:
        typer.echo(f"protlens: error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
