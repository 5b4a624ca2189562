"""Fault-injection hooks for the test suite and ``benchmarks/faults.py``; inert unless the variables are set.

``PROTLENS_FAULT=phase[:n]`` kills this process with SIGKILL the n-th time (default 1st) it reaches
``phase``, so a test can stop ``protlens embed`` at an exact point without sleeping. Phases, in order:
``load`` (model loaded), ``batch`` (a batch computed, not yet saved), ``part`` (a progress part written
to its temp file, not yet renamed), ``assemble`` (all batches done), ``sidecar`` (per-residue file
written, not yet renamed), ``h5ad`` (h5ad written, not yet renamed), ``written`` (every output in
place, saved progress not yet removed).

``PROTLENS_BATCH_LOG=FILE`` appends the index of every batch the engine computes, one per line, so a
test can count what a resumed run recomputed.
"""

from __future__ import annotations

import os
import signal

_FAULT, _, _NTH = os.environ.get("PROTLENS_FAULT", "").partition(":")
_BATCH_LOG = os.environ.get("PROTLENS_BATCH_LOG")
_seen: dict[str, int] = {}


def point(phase: str) -> None:
    """Die here (SIGKILL, like a power cut or the OOM killer) if ``PROTLENS_FAULT`` names this phase."""
    if phase != _FAULT:
        return
    _seen[phase] = _seen.get(phase, 0) + 1
    if _seen[phase] == int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def log_batch(index: int) -> None:
    """Record a computed batch in ``PROTLENS_BATCH_LOG`` (flushed at once: a kill must not lose it)."""
    if _BATCH_LOG:
        with open(_BATCH_LOG, "a") as fh:
            fh.write(f"{index}\n")
