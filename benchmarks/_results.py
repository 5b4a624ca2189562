"""What every benchmark result file records: the machine, the load, and where results go."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """CPU model, ISA level torch uses, core count and the 1-minute load average (one line)."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()}, load average {load:.1f} at start")


#: environment variables that cap the instruction set torch, oneDNN and MKL use (the AVX2 runs)
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def isa_env() -> str:
    """The ISA caps set for this run, as shell assignments ('' when none)."""
    return " ".join(f"{k}={os.environ[k]}" for k in ISA_ENV if k in os.environ)


def command() -> str:
    """The command line that produced this result, ISA caps included, as a reader can rerun it."""
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    return " ".join(x for x in (isa_env(), "python", script, *sys.argv[1:]) if x)


def write(name: str, markdown: str, summary: list[dict] | None = None) -> Path:
    """``results/<name>.md`` (and ``<name>.summary.json`` for headline rows), each replaced atomically."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    write_text_atomic(path, markdown.rstrip() + "\n")
    if summary is not None:
        write_summary(RESULTS / f"{name}.summary.json", summary)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a killed benchmark never leaves half a file for build_docs.py."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(path: Path, rows: list[dict]) -> None:
    """The summary rows build_docs.py reads ({"issue", "target", "measured", "met"} each)."""
    write_text_atomic(path, json.dumps(rows, indent=1) + "\n")
