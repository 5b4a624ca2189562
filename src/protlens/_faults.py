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

import gzip
import os
import signal
from pathlib import Path

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


def hostile_embed_cases(folder: Path, model: Path, cuda: bool) -> dict[str, list[str]]:
    """``protlens embed`` argument lists, one per class of unreadable input or impossible option, each
    of which must end in one line and exit 2 leaving nothing behind; input files are made in ``folder``.
    ``cuda``: whether this machine has a CUDA device (then '--device cuda' is no error and is left out)."""
    ok = folder / "ok.fasta"
    ok.write_text(">a\nMKVLAAGW\n")
    out = str(folder / "o.h5ad")
    files = {
        ("binary", ".fasta"): bytes(range(256)) * 4,
        ("gzip under a plain name", ".fasta"): gzip.compress(b">a\nMKV\n"),
        ("plain text under .gz", ".fasta.gz"): b">a\nMKV\n",
        ("truncated .gz", ".fasta.gz"): gzip.compress("".join(f">s{i}\nMKVLW\n" for i in range(300)).encode())[:200],
        ("UTF-16", ".fasta"): ">a\nMKV\n".encode("utf-16"),
        ("latin-1", ".fasta"): ">caf\xe9\nMKV\n".encode("latin-1"),
        (".h5ad as FASTA", ".fasta"): b"\x89HDF\r\n\x1a\n" + bytes(64),
        ("empty CSV", ".csv"): b"",
        ("CSV row with empty id", ".csv"): b"id,sequence\na,MKV\n,MKW\n",
        ("nucleotide FASTA", ".fasta"): b">g1\nATGGCGTACGATCGATCGATGCTAGCTAGCTAGGCTAACG\n",
        ("non-ASCII letter", ".fasta"): ">a\nMK\u00dfV\n".encode(),
    }
    cases = {}
    for i, ((name, suffix), data) in enumerate(files.items()):
        path = folder / f"in{i}{suffix}"
        path.write_bytes(data)
        cases[name] = [str(path), "-o", out, "--model", "kmer"]
    (folder / "dir.fasta").mkdir()
    base = [str(ok), "--model", str(model), "-o"]
    cases.update({
        "a directory": [str(folder / "dir.fasta"), "-o", out, "--model", "kmer"],
        "-o equal to the input": [str(ok), "-o", str(ok), "--model", "kmer"],
        "--per-residue equal to -o": [*base, out, "--per-residue", out],
        "-o a directory": [*base, str(folder / "dir.fasta")],
        "-o in a missing folder": [*base, str(folder / "missing" / "o.h5ad")],
        "--layers ,": [*base, out, "--layers", ","],
        "--layers 99": [*base, out, "--layers", "99"],
        "--window 0": [*base, out, "--window", "0"],
        "--max-tokens 0": [*base, out, "--max-tokens", "0"],
        "--overlap >= --window": [*base, out, "--window", "50", "--overlap", "50"],
    })
    if not cuda:
        cases["--device cuda without a GPU"] = [*base, out, "--device", "cuda"]
    return cases
