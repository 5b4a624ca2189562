"""protlens embed under faults: SIGKILL at every phase and at random instants, tampered progress,
concurrent writers, a full disk, and hostile input.

Kills are exact: ``PROTLENS_FAULT=phase[:n]`` makes the subprocess SIGKILL itself at a named point
(see ``protlens._faults``), and ``PROTLENS_BATCH_LOG`` lists the batches each run computed, so a test
can assert what a resumed run recomputed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from protlens.io import read_h5ad, read_residues

AA = "ACDEFGHIKLMNPQRSTVWY"
N_SEQS = 150
COMMON = ["--max-tokens", "256", "--checkpoint-every", "0", "--no-progress"]


def _seqs(n: int = N_SEQS, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(AA), int(k))) for k in rng.integers(20, 150, n)]


def _save_model(folder: Path, seed: int) -> Path:
    from conftest import make_tiny_hf

    from protlens.models import EsmPLM

    EsmPLM(make_tiny_hf(seed=seed), f"tiny-{seed}", "test").save_pretrained(folder)
    return folder


def _embed(workdir: Path, model: Path, *, out: str = "out.h5ad", fault: str | None = None,
           log: Path | None = None, wait: bool = True, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PROTLENS_FAULT", None)
    if fault:
        env["PROTLENS_FAULT"] = fault
    if log:
        env["PROTLENS_BATCH_LOG"] = str(log)
    cmd = [sys.executable, "-m", "protlens", "embed", "in.fasta", "-o", out, "--model", str(model), *COMMON,
           "--per-residue", out.replace(".h5ad", ".res.h5")]
    if not wait:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **popen)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, **popen)


def _batches(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def _assert_same(a_dir: Path, b_dir: Path, out: str = "out.h5ad") -> None:
    a, b = read_h5ad(a_dir / out), read_h5ad(b_dir / out)
    assert list(a.obs_names) == list(b.obs_names)
    np.testing.assert_array_equal(a.X, b.X)
    ids = list(a.obs_names)
    res = out.replace(".h5ad", ".res.h5")
    for x, y in zip(read_residues(a_dir / res, ids, "layer2"), read_residues(b_dir / res, ids, "layer2")):
        np.testing.assert_array_equal(x, y)


def _leftovers(folder: Path) -> list[str]:
    """Files a finished run must not leave: progress, locks, temp files."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith((".parts", ".lock", ".tmp")) or p.name.startswith("."))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny models, an input of ~50 batches, and an uninterrupted reference run per model."""
    root = tmp_path_factory.mktemp("faults")
    models = [_save_model(root / f"model{s}", s) for s in (0, 1)]
    fasta = "".join(f">s{i}\n{s}\n" for i, s in enumerate(_seqs()))
    refs = []
    for k, m in enumerate(models):
        ref = root / f"ref{k}"
        ref.mkdir()
        (ref / "in.fasta").write_text(fasta)
        log = root / f"ref{k}.log"
        r = _embed(ref, m, log=log)
        assert r.returncode == 0, r.stderr
        refs.append(ref)
    n_batches = len(_batches(root / "ref0.log"))
    assert sorted(_batches(root / "ref0.log")) == list(range(n_batches)) and n_batches >= 30
    return dict(root=root, models=models, refs=refs, fasta=fasta, n_batches=n_batches)


def _fresh(world, name: str) -> Path:
    d = world["root"] / name
    d.mkdir()
    (d / "in.fasta").write_text(world["fasta"])
    return d


def _kill_and_resume(world, d: Path, fault: str) -> tuple[list[int], list[int]]:
    """Run with a fault, check it died by SIGKILL, rerun; return (batches of run 1, of run 2)."""
    m = world["models"][0]
    r1 = _embed(d, m, fault=fault, log=d / "run1.log")
    assert r1.returncode == -signal.SIGKILL, (fault, r1.returncode, r1.stderr)
    r2 = _embed(d, m, log=d / "run2.log")
    assert r2.returncode == 0, r2.stderr
    _assert_same(d, world["refs"][0])
    assert _leftovers(d) == []
    return _batches(d / "run1.log"), _batches(d / "run2.log")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["load", "batch:5", "part:7", "assemble", "sidecar", "h5ad", "written"])
def test_kill_at_each_phase_resumes_identically(world, fault):
    """With a checkpoint after every batch, a resumed run recomputes at most the batch in flight."""
    d = _fresh(world, f"kill-{fault.replace(':', '-')}")
    first, second = _kill_and_resume(world, d, fault)
    assert sorted(set(first) | set(second)) == list(range(world["n_batches"]))
    recomputed = set(first) & set(second)
    in_flight = {first[-1]} if fault.startswith(("batch", "part")) else set()
    assert recomputed == in_flight, (fault, recomputed)
    if fault in ("assemble", "sidecar", "h5ad", "written"):
        assert second == []


@pytest.mark.slow
def test_kill_at_random_instants(world):
    """SIGKILL at random times (import, loading, batches, final write); the rerun matches."""
    rng = random.Random(16)
    m = world["models"][0]
    for trial in range(3):
        upper, attempt = 8.0, 0
        while True:  # an instant after the run had finished is no kill: draw again, earlier
            attempt += 1
            d = _fresh(world, f"random-{trial}-{attempt}")
            t0 = time.perf_counter()
            p = _embed(d, m, log=d / "run1.log", wait=False)
            try:
                p.wait(timeout=rng.uniform(0.5, upper))  # the kill instant itself is what is random here
            except subprocess.TimeoutExpired:
                p.kill()
            p.communicate()
            finished = (d / "out.h5ad").exists() and not (d / "out.h5ad.parts").exists()
            if p.returncode == -signal.SIGKILL and not finished:  # a kill in teardown, after the last step, is none
                break
            upper = max(0.6, 0.9 * (time.perf_counter() - t0))
        r2 = _embed(d, m, log=d / "run2.log")
        assert r2.returncode == 0, r2.stderr
        _assert_same(d, world["refs"][0])
        first, second = _batches(d / "run1.log"), _batches(d / "run2.log")
        assert len(set(first) & set(second)) <= 1  # at most the batch in flight at the kill
        assert _leftovers(d) == []


def _hold(world, d: Path, model: Path) -> subprocess.Popen:
    """Start an embed and freeze it (SIGSTOP) once it holds the output lock."""
    p = _embed(d, model, wait=False)
    lock = d / "out.h5ad.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(p.pid)):
        assert p.poll() is None and time.monotonic() < deadline, "the first writer never took the lock"
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGSTOP)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("second_model", [0, 1])
def test_second_writer_is_refused_and_nothing_mixes(world, second_model):
    d = _fresh(world, f"concurrent-{second_model}")
    a = _hold(world, d, world["models"][0])
    try:
        b = _embed(d, world["models"][second_model])
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert b.returncode == 2
    assert b.stderr.strip().splitlines() == [
        f"protlens: error: out.h5ad is being written by another protlens process (pid {a.pid}); "
        "wait for it to finish or choose another output"]
    a.communicate(timeout=600)
    assert a.returncode == 0
    _assert_same(d, world["refs"][0])


@pytest.mark.slow
def test_progress_of_another_model_is_discarded_with_a_count(world):
    """Kill a run of model 0 midway, run model 1 on the same output: model 1's result, nothing mixed."""
    d = _fresh(world, "other-model")
    r1 = _embed(d, world["models"][0], fault="batch:9", log=d / "run1.log")
    assert r1.returncode == -signal.SIGKILL
    saved = len(list((d / "out.h5ad.parts").glob("part-*.npz")))
    assert saved == 8  # batches 1..8 flushed, the 9th was in flight
    r2 = _embed(d, world["models"][1], log=d / "run2.log")
    assert r2.returncode == 0, r2.stderr
    assert r2.stderr.strip().splitlines() == [
        f"protlens: warning: out.h5ad.parts: discarded {saved} saved part(s) ({saved} batches) of a different run "
        "(other model, input or settings)"]
    assert sorted(_batches(d / "run2.log")) == list(range(world["n_batches"]))
    _assert_same(d, world["refs"][1])


def _tamper(part: Path, kind: str) -> None:
    if kind == "truncated":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif kind == "zeroed":
        part.write_bytes(bytes(part.stat().st_size))
    elif kind == "empty":
        part.write_bytes(b"")
    else:
        with np.load(part) as z:
            arrays = {k: z[k] for k in z.files}
        if kind == "foreign":
            arrays["fingerprint"] = np.array("0" * 64)
        elif kind == "nan":
            key = next(k for k in arrays if k.endswith("/sum2"))
            arrays[key] = arrays[key].copy()
            arrays[key][0, 0] = np.nan
        elif kind == "edited":  # a coherent file whose numbers were changed: only the checksum sees it
            key = next(k for k in arrays if k.endswith("/sum2"))
            arrays[key] = arrays[key] + 1
        elif kind == "index-retyped":  # the batch index rewritten as floats that still truncate to its ints
            arrays["batches"] = arrays["batches"] * np.float32(1.0001)
        with open(part, "wb") as fh:
            np.savez(fh, **arrays)


@pytest.fixture(scope="module")
def checkpointed(world):
    """A run killed after every batch was saved (one part per batch), to tamper with."""
    d = _fresh(world, "checkpointed")
    r = _embed(d, world["models"][0], fault="assemble")
    assert r.returncode == -signal.SIGKILL
    return d


@pytest.mark.slow
@pytest.mark.parametrize("kind, problem", [
    ("truncated", "unreadable"), ("zeroed", "unreadable"), ("empty", "unreadable"),
    ("nan", "holds NaN or inf"), ("edited", "checksum mismatch (damaged)"),
    ("index-retyped", "checksum mismatch (damaged)"), ("foreign", None)])
def test_tampered_part_is_named_and_recomputed(world, checkpointed, kind, problem):
    d = _fresh(world, f"tamper-{kind}")
    shutil.copytree(checkpointed / "out.h5ad.parts", d / "out.h5ad.parts")
    part = d / "out.h5ad.parts" / "part-000004.npz"
    with np.load(part) as z:
        its_batches = z["batches"].tolist()
    _tamper(part, kind)
    r = _embed(d, world["models"][0], log=d / "run2.log")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    if problem is None:
        assert lines[0] == ("protlens: warning: out.h5ad.parts: discarded 1 saved part(s) (1 batches) of a "
                            "different run (other model, input or settings)")
    else:
        assert lines[0].startswith(f"protlens: warning: out.h5ad.parts/part-000004.npz: {problem}")
        assert lines[0].endswith("; discarded, its batches will be recomputed")
    assert _batches(d / "run2.log") == its_batches
    _assert_same(d, world["refs"][0])


def test_full_disk_is_one_line_and_keeps_progress(tiny_esm_dir, tmp_path, capsys, monkeypatch):
    """Not enough space for the per-residue file: one line naming it, exit 2, nothing written, and the
    rerun (space freed) computes no batch again. In-process: the free space is what is faked."""
    import collections
    import shutil as sh

    from protlens.cli import main
    from protlens.pp import _embed as engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets protlens' format
    (tmp_path / "in.fasta").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(_seqs(40))))
    args = ["protlens", "embed", "in.fasta", "-o", "out.h5ad", "--model", str(tiny_esm_dir), *COMMON,
            "--per-residue", "out.res.h5"]
    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(sh, "disk_usage", lambda p: collections.namedtuple("U", "total used free")(usage.total, usage.used, 1000))
    computed = []
    run_batch = engine._run_batch
    monkeypatch.setattr(engine, "_run_batch", lambda *a, **k: computed.append(1) or run_batch(*a, **k))
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("protlens: error: out.res.h5: cannot write (needs about ")
    assert lines[0].endswith(" MB, 0 MB free); finished batches are kept in out.h5ad.parts: rerun the same command")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta", "out.h5ad.parts", "tiny_esm_hf"]
    n_first = len(computed)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(engine, "_run_batch", lambda *a, **k: computed.append(1) or run_batch(*a, **k))
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0 and len(computed) == n_first and n_first > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta", "out.h5ad", "out.res.h5", "tiny_esm_hf"]


def test_stray_temp_files_are_removed(world_light, tmp_path):
    """Temp files of writes killed before their rename disappear with the next run."""
    (tmp_path / "in.fasta").write_text(">a\nMKVLAAGW\n>b\nMKKLLPPW\n")
    for name in (".out.h5ad.abcd1234.tmp", ".out.res.h5.zz_x9y8w.tmp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".other.h5ad.abcd1234.tmp").write_bytes(b"")  # not ours: kept
    r = _embed(tmp_path, world_light)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".other.h5ad.abcd1234.tmp"]


@pytest.fixture(scope="module")
def world_light(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("light") / "model", 0)


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_bad_input_table_one_line_exit_2_nothing_left(world_light, tmp_path, capsys, monkeypatch):
    """Every class of unreadable input or impossible option: exit 2, one line, no traceback, no new file."""
    import torch

    from protlens._faults import hostile_embed_cases
    from protlens.cli import main

    cases = hostile_embed_cases(tmp_path, world_light, torch.cuda.is_available())
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets protlens' format
    for name, args in cases.items():
        before = _tree(tmp_path)
        monkeypatch.setattr(sys, "argv", ["protlens", "embed", *args, "--no-progress"])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("protlens: error: "), (name, err)
        assert "Traceback" not in err
        assert _tree(tmp_path) == before, name


def test_version(capsys):
    from protlens import __version__

    r = subprocess.run([sys.executable, "-m", "protlens", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == __version__


def test_lock_refuses_a_second_holder_and_is_removed(tmp_path):
    """flock is per open file: a second acquisition, even from this process, is refused with the pid."""
    from protlens._lock import output_lock
    from protlens.errors import InputError

    out = tmp_path / "o.h5ad"
    with output_lock(out) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(InputError, match=rf"o\.h5ad is being written by another protlens process \(pid {os.getpid()}\)"):
            with output_lock(out):
                pass
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "o.h5ad.lock").write_text("999999999\n")  # left by a killed run: the kernel lock is gone
    with output_lock(out):
        pass
    assert list(tmp_path.iterdir()) == []


def test_lock_creates_and_removes_missing_parents(tmp_path):
    from protlens._lock import output_lock

    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "a" / "b" / "run", parents=True):
            assert (tmp_path / "a" / "b").is_dir()
            raise RuntimeError("the command failed")
    assert list(tmp_path.iterdir()) == []


def test_preflight_paths(tmp_path):
    from protlens._preflight import check_outputs
    from protlens.errors import InputError

    inp = tmp_path / "in.fa"
    inp.write_text(">a\nMK\n")
    os.link(inp, tmp_path / "hard.fa")
    with pytest.raises(InputError, match="-o .*hard.fa is the input file"):
        check_outputs({"-o": tmp_path / "hard.fa"}, inputs={"input": inp})
    with pytest.raises(InputError, match="-o and --per-residue are the same path"):
        check_outputs({"-o": tmp_path / "x", "--per-residue": tmp_path / "." / "x"})
    with pytest.raises(InputError, match="is an existing file; give a folder path"):
        check_outputs({"-o": inp}, folders={"-o"})
    check_outputs({"-o": tmp_path / "new" / "deeper"}, folders={"-o"})
    with pytest.raises(InputError, match="does not exist"):
        check_outputs({"-o": tmp_path / "new" / "o.h5ad"})
