"""Checks every command runs before loading a model: output paths, device, option ranges.

A mistake found here costs the user nothing (no model load, no file written); found after an hour of
embedding it costs the hour, or worse, the input file.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from .errors import InputError


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None] = {},
                  folders: Collection[str] = ()) -> None:
    """Refuse output paths that would overwrite an input or each other, or cannot be written.

    Keys are the options as the user typed them (``-o``, ``--per-residue``) so messages name them.
    Outputs named in ``folders`` are folders (must not be an existing file; missing parents are fine);
    the others are files (must not be a directory; their folder must exist and be writable).
    """
    outs = {k: Path(v) for k, v in outputs.items() if v is not None}
    ins = {k: Path(v) for k, v in inputs.items() if v is not None}
    for name, out in outs.items():
        for iname, inp in ins.items():
            if _same(out, inp):
                raise InputError(f"{name} {out} is the {iname} file: choose another output path")
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same(outs[a], outs[b]):
                raise InputError(f"{a} and {b} are the same path ({outs[a]}): give each output its own path")
    for name, out in outs.items():
        if name in folders:
            if out.exists() and not out.is_dir():
                raise InputError(f"{name} {out} is an existing file; give a folder path")
            parent = out
            while not parent.exists():
                parent = parent.parent
        else:
            if out.is_dir():
                raise InputError(f"{name} {out} is a directory; give a file path such as {out / 'result.h5ad'}")
            parent = out.parent
            if not parent.is_dir():
                raise InputError(f"{name} {out}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{name} {out}: folder {parent} is not writable")


def check_device(device: str) -> None:
    """Refuse a device this machine does not have (``auto`` always works)."""
    import torch

    if device in ("auto", "cpu"):
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device '{device}' (auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError(f"--device {device}: no CUDA device on this machine (use --device cpu or auto)")
        if dev.index is not None and dev.index >= n:
            raise InputError(f"--device {device}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {device}: MPS is not available on this machine (use --device cpu or auto)")
    elif dev.type != "cpu":
        raise InputError(f"unknown device '{device}' (auto, cpu, cuda, cuda:N, mps)")


def check_range(option: str, value: float | None, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    """``value`` within [low, high] (``(low, high]`` with ``low_open``); ``None`` means 'not given'."""
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise InputError(f"{option} {value}: must be {' and '.join(x for x in (lo, hi) if x)}")
