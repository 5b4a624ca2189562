"""BENCHMARKS.md and MODEL_CARD.md are exactly what benchmarks/build_docs.py makes of the result files."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "build_docs.py"


def _load():
    spec = importlib.util.spec_from_file_location("build_docs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_docs_equal_the_rebuilt_ones():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unknown_sections_follow_the_known_ones_and_summary_rows_sort_by_issue(tmp_path):
    bd = _load()
    for name, title in (("zeta", "Z"), ("bench", "Suite"), ("alpha", "A"), ("embed", "Embedding")):
        (tmp_path / f"{name}.md").write_text(f"## {title}\n\nbody of {name}\n")
    rows = {"zeta": [{"issue": "16 locks", "target": "t", "measured": "m|x", "met": "yes"}],
            "bench": [{"issue": "7 suite", "target": "t", "measured": "m", "met": "no"}],
            "alpha": [{"issue": "2 early", "target": "t", "measured": "m", "met": "yes"}]}
    for name, r in rows.items():
        (tmp_path / f"{name}.summary.json").write_text(json.dumps(r))
    text = bd.benchmarks_md(tmp_path)
    assert [text.index(f"body of {n}") for n in ("embed", "bench", "alpha", "zeta")] == sorted(
        text.index(f"body of {n}") for n in ("embed", "bench", "alpha", "zeta"))
    table = [line for line in text.splitlines() if line.startswith("| ") and "issue" not in line]
    assert [line.split(" | ")[0] for line in table] == ["| 2 early", "| 7 suite", "| 16 locks"]
    assert "m\\|x" in text  # a pipe inside a cell does not break the table


def test_a_malformed_summary_row_is_refused(tmp_path):
    bd = _load()
    (tmp_path / "x.md").write_text("## X\n")
    (tmp_path / "x.summary.json").write_text(json.dumps([{"issue": "1", "target": "t", "measured": "m"}]))
    with pytest.raises(SystemExit, match="row 0 must have exactly the keys"):
        bd.benchmarks_md(tmp_path)


def test_model_card_reads_the_training_figures_from_metrics_json(tmp_path):
    bd = _load()
    model = tmp_path / "protlens-small"
    shutil.copytree(bd.MODEL_DIR, model, ignore=shutil.ignore_patterns("*.safetensors", "*.gz"))
    metrics = json.loads((model / "metrics.json").read_text())
    metrics.update(epochs=4.25, steps=12345)
    (model / "metrics.json").write_text(json.dumps(metrics))
    card = bd.model_card_md(bd.RESULTS, model)
    assert "| epochs (of the cropped training split) | 4.25 |" in card and "| optimizer steps | 12,345 |" in card


def test_check_fails_on_a_hand_edit(tmp_path, monkeypatch):
    bd = _load()
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("hand-edited\n")
    monkeypatch.setattr(bd, "build", lambda: {out: "generated\n"})
    assert bd.main(["--check"]) == 1
    assert bd.main([]) == 0 and out.read_text() == "generated\n" and bd.main(["--check"]) == 0
