"""The Ray engine: equals the local engine, survives a killed worker, resumes by shard."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from protlens import _keys as K
from protlens.errors import InputError
from protlens.io import read_residues, sequences_to_anndata
from protlens.pp import _ray, embed, embed_ray

AA = list("ACDEFGHIKLMNPQRSTVWY")
# windows of 64 residues so the few long sequences here are windowed and stitched like long proteins
SETTINGS = dict(layers=[-1, 0], window=64, overlap=16, max_tokens=512, progress=False)


def rand_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(AA, k)) for k in rng.integers(5, 150, n)]
    return [f"p{i}|x" for i in range(n)], seqs


def shutdown_and_reap(ray, psutil) -> None:
    """ray.shutdown(), then make sure no process this test started outlives it."""
    ours = psutil.Process().children(recursive=True)  # raylet, GCS and every worker they started
    ray.shutdown()
    _, alive = psutil.wait_procs(ours, timeout=30)
    for proc in alive:  # e.g. a worker still importing torch on a loaded machine
        proc.kill()


@pytest.fixture(scope="module")
def ray_local():
    """A private 2-CPU Ray instance without dashboard or usage reporting."""
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    old = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for attempt in range(2):  # Ray gives its raylet 30 s to start, which a busy CI machine can miss
        try:
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            break
        except Exception:
            shutdown_and_reap(ray, psutil)
            if attempt:
                raise
    yield ray
    shutdown_and_reap(ray, psutil)
    if old is None:
        os.environ.pop("RAY_USAGE_STATS_ENABLED")
    else:
        os.environ["RAY_USAGE_STATS_ENABLED"] = old


def local_result(model_dir, ids, seqs, tmp_path):
    adata = sequences_to_anndata(ids, seqs)
    embed(adata, str(model_dir), per_residue_file=tmp_path / "local.h5", **SETTINGS)
    return adata


def assert_same(local, distributed, ids, tmp_path):
    np.testing.assert_allclose(distributed.X, local.X, atol=1e-5)
    np.testing.assert_allclose(distributed.obsm[K.layer_key(0)], local.obsm[K.layer_key(0)], atol=1e-5)
    ref_res, ray_res = (read_residues(tmp_path / f, ids, "layer2") for f in ("local.h5", "ray.h5"))
    for a, b in zip(ref_res, ray_res):
        np.testing.assert_allclose(b, a, atol=1e-5)
    info, ref = distributed.uns[K.EMBED], local.uns[K.EMBED]
    for key in ("model", "weights_hash", "layers", "pooling", "window", "n_windowed", "device"):
        assert info[key] == ref[key], key
    assert info["engine"] == "ray" and info["num_workers"] == 2


def test_plan_shards_longest_first_and_complete():
    shards = _ray.plan_shards([5, 50, 7, 300, 9], shard_size=2)
    assert [s.tolist() for s in shards] == [[3, 1], [4, 2], [0]]
    assert _ray.default_shard_size(538) == 16 and _ray.default_shard_size(10**6) == 256
    with pytest.raises(InputError, match="shard-size"):
        _ray.plan_shards([5], 0)


def test_shard_store_discards_shards_of_other_settings(tmp_path):
    store = _ray._ShardStore(tmp_path / "s", "fingerprint-a")
    store.write(0, b"payload")
    assert store.missing(2) == [1]
    assert _ray._ShardStore(tmp_path / "s", "fingerprint-a").missing(2) == [1]
    assert _ray._ShardStore(tmp_path / "s", "fingerprint-b").missing(2) == [0, 1]


def test_missing_ray_is_an_input_error(monkeypatch, tiny_esm):
    monkeypatch.setitem(sys.modules, "ray", None)
    adata = sequences_to_anndata(["a"], ["ACDE"])
    with pytest.raises(InputError, match=r"pip install 'protlens\[ray\]'"):
        embed_ray(adata, tiny_esm, progress=False)


def map_workers() -> list:
    """This test process's Ray Data actor processes (descendants of the raylet it started)."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "MapWorker" in " ".join(p.cmdline())]


def kill_a_worker_mid_run(shard_dir, already: int, killed: dict) -> None:
    """SIGKILL one model actor as soon as the running pipeline has written a shard of its own."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = len(list(shard_dir.glob("shard-*.npz")))
        workers = map_workers() if done > already else []
        if workers:
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.update(pid=workers[0].pid, shards_done=done)
            return
        time.sleep(0.01)


def test_cli_rejects_unknown_engine_and_cuda_without_gpus(tmp_path, tiny_esm_dir):
    from typer.testing import CliRunner

    from protlens.cli import app

    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDE\n")
    base = ["embed", str(fasta), "-o", str(tmp_path / "x.h5ad"), "--model", str(tiny_esm_dir)]
    result = CliRunner().invoke(app, [*base, "--engine", "spark"])
    assert isinstance(result.exception, InputError) and "--engine" in str(result.exception)
    pytest.importorskip("ray")
    result = CliRunner().invoke(app, [*base, "--engine", "ray", "--device", "cuda"])
    assert isinstance(result.exception, InputError) and "--gpus-per-worker" in str(result.exception)


@pytest.mark.slow
def test_ray_equals_local_after_driver_crash_and_killed_worker(ray_local, tiny_esm_dir, tmp_path, monkeypatch):
    """Both failure modes in one pipeline (every Ray actor start imports torch, so runs are few):
    the driver dies after saving 2 shards; the rerun reuses them, loses a worker mid-run, and
    still returns what the local engine returns."""
    ids, seqs = rand_data(n=200, seed=1)
    local = local_result(tiny_esm_dir, ids, seqs, tmp_path)
    shard_dir = tmp_path / "shards"
    kwargs = dict(num_workers=2, shard_size=5, shard_dir=shard_dir, per_residue_file=tmp_path / "ray.h5", **SETTINGS)

    written = []
    real_write = _ray._ShardStore.write

    def dies_after_two(self, shard, payload):
        if len(written) == 2:
            raise KeyboardInterrupt
        real_write(self, shard, payload)
        written.append(shard)

    monkeypatch.setattr(_ray._ShardStore, "write", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        embed_ray(sequences_to_anndata(ids, seqs), str(tiny_esm_dir), **kwargs)
    assert sorted(p.name for p in shard_dir.glob("shard-*.npz")) == [f"shard-{k:06d}.npz" for k in sorted(written)]
    assert not (tmp_path / "ray.h5").exists()
    monkeypatch.setattr(_ray._ShardStore, "write", real_write)

    killed = {}
    killer = threading.Thread(target=kill_a_worker_mid_run, args=(shard_dir, 2, killed), daemon=True)
    killer.start()
    adata = sequences_to_anndata(ids, seqs)
    embed_ray(adata, str(tiny_esm_dir), **kwargs)
    killer.join(timeout=5)
    assert killed and killed["shards_done"] < 40, "no worker was killed while shards were left"
    info = adata.uns[K.EMBED]
    assert info["n_shards"] == 40 and info["shards_reused"] == 2
    assert_same(local, adata, ids, tmp_path)
    assert not shard_dir.exists()  # merged, then cleaned up
