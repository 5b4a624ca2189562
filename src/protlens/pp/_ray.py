"""The Ray engine: the local engine's work, sharded over an actor pool on a Ray cluster.

Sequences are sorted by length and cut into shards of ``shard_size`` sequences, so every shard is a
length bucket and the token-budget batching inside it pads little. A Ray Data pipeline streams the
shards to an actor pool holding one model replica per worker (a GPU each, or CPU cores); each actor
runs :func:`embed_sequences` (the local engine's windows, pooling and batching, so results match it)
and returns the shard's arrays as one ``.npz`` payload, which the driver writes atomically into
``shard_dir`` as it arrives. The shards are then merged into the AnnData exactly as
:func:`protlens.pp.embed` fills it.

Failures: Ray restarts a dead actor and retries its shards (Ray Data's default for actor pools); if
the driver itself dies, rerunning the same call finds the finished shards and redoes only the
missing ones. The driver writes the shards, so workers need no shared filesystem.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import _keys as K
from ..errors import InputError
from ..io import atomic_path, write_residues
from ..models import EsmPLM, KmerEmbedder, default_model_name, load_model
from ._embed import _fingerprint, _progress_bar, resolve_dtype, resolve_max_tokens, resolve_pooling, store_embedding


def _import_ray():
    """Ray is an optional dependency: import it only when the Ray engine is asked for."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("the Ray engine needs Ray Data: pip install 'protlens[ray]'") from None
    return ray


def default_shard_size(n: int) -> int:
    """At least 64 shards (so workers stay balanced to the end), of 16 to 256 sequences each."""
    return int(min(256, max(16, -(-n // 64))))


def plan_shards(lengths: Sequence[int], shard_size: int) -> list[np.ndarray]:
    """Sequence indices of each shard, longest sequences first (deterministic for the same input)."""
    if shard_size < 1:
        raise InputError(f"--shard-size {shard_size} must be at least 1")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


class _ShardEmbedder:
    """Ray Data callable class: one model replica per actor, one shard per call."""

    def __init__(self, model, settings: dict, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = load_model(model) if isinstance(model, str) else model
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ._embed import embed_sequences, resolve_device

        payloads = []
        for seqs in batch["seqs"]:
            res = embed_sequences(self.model, [str(s) for s in seqs], progress=False, **self.settings)
            arrays = {f"pooled{layer}": x for layer, x in res.pooled.items()}
            for layer, per_seq in (res.per_residue or {}).items():
                arrays.update({f"res{layer}/{j}": x for j, x in enumerate(per_seq)})
            neural = self.model.is_neural
            arrays["n_windowed"] = np.int64(res.n_windowed)
            arrays["device"] = np.array(str(resolve_device(self.settings["device"])) if neural else "cpu")
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            payloads.append(buf.getvalue())
        return {"shard": batch["shard"], "payload": np.array(payloads, dtype=object)}


class _ShardStore:
    """Finished shards on disk, one atomically written ``.npz`` each; stale shards are discarded."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        meta = folder / "fingerprint.txt"
        if folder.exists() and (not meta.exists() or meta.read_text() != fingerprint):
            shutil.rmtree(folder)  # input or settings changed: these shards are not ours to reuse
        folder.mkdir(parents=True, exist_ok=True)
        meta.write_text(fingerprint)

    def path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:06d}.npz"

    def missing(self, n_shards: int) -> list[int]:
        return [k for k in range(n_shards) if not self.path(k).exists()]

    def write(self, shard: int, payload: bytes) -> None:
        with atomic_path(self.path(shard)) as tmp:
            tmp.write_bytes(payload)

    def load(self, shard: int) -> dict[str, np.ndarray]:
        with np.load(self.path(shard)) as z:
            return {k: z[k] for k in z.files}


def _check_resources(ray, num_workers: int, cpus: float, gpus: float) -> None:
    """Fail fast instead of waiting forever for actors the cluster cannot place."""
    total = ray.cluster_resources()
    for what, per, have in (("CPUs", cpus, total.get("CPU", 0)), ("GPUs", gpus, total.get("GPU", 0))):
        if num_workers * per > have:
            raise InputError(f"{num_workers} workers x {per:g} {what} each need {num_workers * per:g} {what}, "
                             f"but the Ray cluster has {have:g}; lower --num-workers")


def embed_ray(adata, model: EsmPLM | KmerEmbedder | str | None = None, layers: Sequence[int] = (-1,),
              pooling: str | None = None, per_residue_file: str | Path | None = None, max_tokens: int | None = None,
              device: str = "auto", dtype: str = "fp32", truncate: bool = False, window: int | None = None,
              overlap: int = 256, num_workers: int = 2, address: str | None = None, gpus_per_worker: float = 0,
              cpus_per_worker: float = 1, shard_size: int | None = None, shard_dir: str | Path | None = None,
              progress: bool = True) -> None:
    """:func:`protlens.pp.embed` on a Ray cluster: same slots, same values (to float tolerance).

    ``address`` is passed to ``ray.init`` (``"auto"`` joins a running cluster; ``None`` starts a
    local instance) unless Ray is already initialised in this process. Shards hold ``shard_size``
    sequences (default: :func:`default_shard_size`) and go to ``shard_dir``
    (default: a temporary folder, so nothing to resume from) and are removed after a successful
    merge; rerunning with the same ``shard_dir`` after a failure redoes only the missing shards.
    ``uns['embed']`` additionally records ``engine='ray'``, the worker count and the shard counts.
    """
    ray = _import_ray()
    if num_workers < 1:
        raise InputError(f"--num-workers {num_workers} must be at least 1")
    resolve_dtype(dtype, torch.device("cuda" if gpus_per_worker else "cpu"))  # what the workers will run
    max_tokens = resolve_max_tokens(max_tokens, torch.device("cuda" if gpus_per_worker else "cpu"))
    if device.startswith("cuda") and not gpus_per_worker:
        raise InputError(f"--device {device} needs --gpus-per-worker (Ray hides GPUs from workers without one)")
    if isinstance(model, (str, Path, type(None))):
        spec = str(model or default_model_name())
        if Path(spec).exists():  # workers may run in another directory
            spec = str(Path(spec).resolve())
        model = load_model(spec)  # on the driver too: provenance and the resume fingerprint
    else:
        spec = model  # an in-memory model is shipped to the actors through the object store
    pooling = resolve_pooling(model, pooling)  # checked here: an error inside an actor surfaces as a Ray error
    neural = model.is_neural
    if not neural and per_residue_file is not None:
        raise InputError("the k-mer baseline has no per-residue embeddings")
    layer_ids = [model.resolve_layer(i) for i in layers] if neural else [0]
    unique_layers = sorted(set(layer_ids))
    seqs = adata.obs[K.SEQUENCE].astype(str).tolist()
    shard_size = default_shard_size(len(seqs)) if shard_size is None else shard_size
    shards = plan_shards([len(s) for s in seqs], shard_size)
    settings = dict(layers=unique_layers, pooling=pooling, per_residue=per_residue_file is not None,
                    max_tokens=max_tokens, device=device, dtype=dtype, truncate=truncate, window=window,
                    overlap=overlap)
    fingerprint = _fingerprint(model, seqs, {**settings, "shard_size": shard_size, "engine": "ray"})
    tmp_dir = None
    if shard_dir is None:
        import tempfile

        tmp_dir = tempfile.TemporaryDirectory(prefix="protlens-shards-")
        shard_dir = tmp_dir.name
    store = _ShardStore(Path(shard_dir), fingerprint)
    todo = store.missing(len(shards))

    t0 = time.perf_counter()
    if todo:
        _run_pipeline(ray, spec, seqs, shards, todo, settings, store, num_workers, address, gpus_per_worker,
                      cpus_per_worker, progress)
    pooled, n_windowed, worker_device = _merge(adata, store, shards, unique_layers, per_residue_file)
    seconds = time.perf_counter() - t0

    pooled = {layer: pooled[layer] for layer in dict.fromkeys(layer_ids)}
    adata.uns[K.EMBED] = {
        **store_embedding(adata, model, pooled, pooling=pooling, window=window, overlap=overlap, truncate=truncate,
                          n_windowed=n_windowed, max_tokens=max_tokens, device=worker_device, dtype=dtype,
                          seconds=seconds),
        "engine": "ray", "num_workers": num_workers, "gpus_per_worker": gpus_per_worker,
        "cpus_per_worker": cpus_per_worker, "shard_size": shard_size, "n_shards": len(shards),
        "shards_reused": len(shards) - len(todo),
    }
    if per_residue_file is not None:
        adata.uns[K.PER_RESIDUE] = str(per_residue_file)
    if tmp_dir is not None:
        tmp_dir.cleanup()
    else:
        shutil.rmtree(store.folder)


def _run_pipeline(ray, spec, seqs, shards, todo, settings, store, num_workers, address, gpus_per_worker,
                  cpus_per_worker, progress) -> None:
    """Stream the missing shards through the actor pool, writing each result as it arrives."""
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    try:
        _check_resources(ray, num_workers, cpus_per_worker, gpus_per_worker)
        ctx = ray.data.DataContext.get_current()
        bars = ctx.enable_progress_bars
        ctx.enable_progress_bars = False  # ours below counts sequences and residues
        items = [{"shard": k, "seqs": [seqs[i] for i in shards[k]]} for k in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _ShardEmbedder, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
            fn_constructor_kwargs=dict(model=spec, settings=settings, threads=max(1, int(cpus_per_worker))))
        n_res = sum(len(s) for it in items for s in it["seqs"])
        try:
            with _progress_bar(progress, sum(len(it["seqs"]) for it in items), n_res) as bar:
                for row in ds.iter_rows():
                    k = int(row["shard"])
                    store.write(k, row["payload"])
                    bar(len(shards[k]), sum(len(seqs[i]) for i in shards[k]))
        finally:
            ctx.enable_progress_bars = bars
    finally:
        if started:
            ray.shutdown()


def _merge(adata, store: _ShardStore, shards, unique_layers, per_residue_file):
    """Shards back into input order; per-residue arrays streamed shard by shard into the sidecar."""
    n = adata.n_obs
    pooled: dict[int, np.ndarray] = {}
    n_windowed = 0
    device = "cpu"
    ids = list(adata.obs_names)
    sidecar = atomic_path(per_residue_file) if per_residue_file is not None else contextlib.nullcontext()
    with sidecar as tmp:
        for k, idx in enumerate(shards):
            arrays = store.load(k)
            n_windowed += int(arrays["n_windowed"])
            device = str(arrays["device"])
            for layer in unique_layers:
                part = arrays[f"pooled{layer}"]
                pooled.setdefault(layer, np.zeros((n, part.shape[1]), dtype=np.float32))[idx] = part
                if per_residue_file is not None:
                    write_residues(tmp, {ids[i]: arrays[f"res{layer}/{j}"] for j, i in enumerate(idx)},
                                   group=f"layer{layer}")
    return pooled, n_windowed, device
