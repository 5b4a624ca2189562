"""The ``protlens`` command line: each subcommand reads files, calls one public function, writes files.

Subcommands of each area live in that area's ``cli.py`` and attach themselves through ``register``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Protein language model embeddings you can cluster, evaluate, explain and train.")

#: Modules whose ``register(app)`` adds subcommands (one line per area).
SUBCOMMAND_MODULES = [
]

for _mod in SUBCOMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except InputError as e:
        typer.echo(f"protlens: error: {e}", err=True)
        sys.exit(2)
