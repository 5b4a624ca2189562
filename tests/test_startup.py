"""Start-up cost: the CLI must not import the scientific stack until a command needs it (issue 22)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "sklearn", "anndata", "scipy", "pandas", "h5py", "plotly", "matplotlib",
         "faiss", "captum")


def _loaded_after(code: str) -> list[str]:
    """Heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    return sorted(loaded & set(HEAVY))


def test_import_cli_is_light():
    assert _loaded_after("import protlens.cli") == []


def test_help_lists_every_subcommand_without_heavy_imports():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom protlens.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "sys.stderr.write(r.output)")
    probe = f"{code}\nimport json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert sorted(loaded & set(HEAVY)) == []
    for command in ("embed", "run", "bench", "explain", "train"):
        assert f" {command} " in proc.stderr


@pytest.mark.parametrize("package, module, name", [
    ("protlens.bench", "protlens.bench.runner", "run_bench"),
    ("protlens.explain", "protlens.explain.api", "explain"),
    ("protlens.explain", "protlens.explain.surrogate", "ClusterCNN"),
    ("protlens.pp", "protlens.pp._embed", "embed"),
    ("protlens.pp", "protlens.pp._ray", "embed_ray"),
])
def test_lazy_names_resolve_to_their_module(package, module, name):
    """``from protlens.pp import embed`` still gives the object defined in its submodule."""
    assert getattr(importlib.import_module(package), name) is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("package", ["protlens.bench", "protlens.explain", "protlens.pp"])
def test_every_exported_name_exists(package):
    mod = importlib.import_module(package)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert missing == []


def test_version_is_the_installed_distribution_version():
    from importlib.metadata import PackageNotFoundError, version

    import protlens

    try:
        expected = version("protlens")
    except PackageNotFoundError:
        expected = "0.0.0+unknown"
    assert protlens.__version__ == expected
    with pytest.raises(AttributeError):
        protlens.no_such_name  # noqa: B018
