"""One writer per output: an exclusive ``flock`` on ``OUT.lock`` beside the output, holding the owner's pid.

A second protlens process on the same output is refused at once (``InputError``, exit 2) with the
running one's pid, so two runs can never interleave rows or progress parts. The kernel drops the lock
when its holder dies, so a lock file left by a killed run is simply taken over.

The lock file is removed when the command ends (success or error) so it does not clutter the output
folder. Removing a flock'ed file is safe only with the inode check in :func:`output_lock`: a process
that opened the old file before it was unlinked sees after locking that the path no longer names its
inode, and retries on the new file instead of believing it holds the lock. ``fcntl`` is used directly
rather than the ``filelock`` package because the refused process must read the holder's pid from the
file, and that needs control over how the file is opened (no truncation before the lock is held).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from .errors import InputError


def lock_path(out: str | Path) -> Path:
    """``OUT.lock`` beside the output file or folder (``-o .`` locks ``../<folder>.lock``)."""
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + ".lock")


@contextmanager
def output_lock(out: str | Path, parents: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock on ``out`` for the block; refuse at once if another process holds it.

    ``parents=True`` creates missing parent folders of ``out`` and removes those it created again if
    they are still empty when the block ends (a failed command leaves nothing behind).
    """
    out = Path(out)
    path = lock_path(out)
    created = _make_parents(path.parent) if parents else []
    try:
        fd = _acquire(out, path)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield path
        finally:
            try:
                os.unlink(path)  # while still holding the lock: see the module docstring
            except FileNotFoundError:
                pass
            os.close(fd)
    finally:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the command wrote its results there
                break


def _acquire(out: Path, path: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{path}: cannot create the lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"{out} is being written by another protlens process (pid {holder}); "
                             "wait for it to finish or choose another output") from None
        mine = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # the previous holder removed the file between our open and our lock: retry


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors; return the created ones, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        try:
            f.mkdir()
        except OSError as e:
            raise InputError(f"{f}: cannot create the output folder ({e.strerror})") from None
    return missing


def job_lock(out: str | Path) -> AbstractContextManager:
    """:func:`output_lock` for a possibly distributed job: only global rank 0 (``RANK`` as torchrun and
    accelerate set it) takes the lock, since the other ranks of the same job share its output."""
    return output_lock(out, parents=True) if int(os.environ.get("RANK", "0")) == 0 else nullcontext()
