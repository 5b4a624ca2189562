"""The embedding engine: length-sorted token-budget batches, windows past the model's reach,
out-of-memory back-off, and crash-safe resumable progress.

Work is planned once from the whole input (a list of batches of *chunks*; a chunk is a sequence or
one window of a long sequence), so a resumed run recomputes exactly the batches an uninterrupted
run would have, and its results are bit-identical.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import _faults
from .. import _keys as K
from .._preflight import check_device, check_range
from ..errors import InputError
from ..io import atomic_path, check_free_space, fsync_dir, write_residues
from ..models import EsmPLM, KmerEmbedder, default_model_name, load_model
from ..models import unirep
from ._windows import WINDOW_RULE, residue_weights, window_spans

POOLINGS = ("mean", "bos")


def resolve_pooling(model, pooling: str | None) -> str:
    """``pooling`` checked against what ``model`` offers; ``None`` = the model's default (``mean``;
    UniRep: ``h_avg``)."""
    pooling = pooling or getattr(model, "default_pooling", "mean")
    allowed = getattr(model, "poolings", POOLINGS)
    if pooling not in allowed:
        raise InputError(f"unknown pooling '{pooling}' for {model.name} (choose from {', '.join(allowed)})")
    return pooling


@dataclass
class EmbedResult:
    """Pooled embeddings per resolved layer, and per-residue arrays when asked for."""

    pooled: dict[int, np.ndarray]
    per_residue: dict[int, list[np.ndarray]] | None = None
    n_windowed: int = 0
    seconds: float = 0.0
    max_tokens: int | None = None  # the batch budget actually used (None for k-mer profiles)


@dataclass(frozen=True)
class Chunk:
    """Residues ``start:end`` of sequence ``seq`` (the whole sequence unless it is windowed)."""

    seq: int
    start: int
    end: int


@dataclass
class Plan:
    """Windows and batches for one input; deterministic for the same input and settings."""

    chunks: list[Chunk]
    batches: list[list[int]]  # indices into chunks
    windowed: list[int] = field(default_factory=list)


def plan_batches(lengths: Sequence[int], window: int | None, overlap: int, max_tokens: int,
                 truncate: bool = False) -> Plan:
    """Split long sequences into windows and pack chunks, longest first, under a padded-token budget."""
    chunks: list[Chunk] = []
    windowed: list[int] = []
    for i, n in enumerate(lengths):
        if window is None:
            chunks.append(Chunk(i, 0, n))
        elif truncate:
            chunks.append(Chunk(i, 0, min(n, window)))
        else:
            spans = window_spans(n, window, overlap)
            if len(spans) > 1:
                windowed.append(i)
            chunks.extend(Chunk(i, s, e) for s, e in spans)
    order = sorted(range(len(chunks)), key=lambda c: (-(chunks[c].end - chunks[c].start), c))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_width = 0
    for c in order:
        width = chunks[c].end - chunks[c].start + 2
        if cur and max(cur_width, width) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, cur_width = [], 0
        cur.append(c)
        cur_width = max(cur_width, width)
    if cur:
        batches.append(cur)
    return Plan(chunks, batches, windowed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a device this machine lacks is refused."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device(device)
    return torch.device(device)


#: Padded-token budget per batch when none is given. On CPU, 1024 tokens keep a batch's activations
#: cache-sized: same residues/s as 4096 on 2 cores, ~20% lower peak memory (BENCHMARKS.md).
#: Accelerators want big batches.
DEFAULT_MAX_TOKENS = {"cpu": 1024, "accelerator": 4096}


def resolve_max_tokens(max_tokens: int | None, device: torch.device) -> int:
    """The batch budget for ``device`` (``None`` = the device's default), validated."""
    if max_tokens is None:
        return DEFAULT_MAX_TOKENS["cpu" if device.type == "cpu" else "accelerator"]
    check_range("--max-tokens", max_tokens, 8)
    return max_tokens


def check_embed_options(layers: Sequence[int], pooling: str = "mean", dtype: str = "fp32", device: str = "auto",
                        max_tokens: int | None = None, window: int | None = None, overlap: int = 256,
                        checkpoint_every: float = 30.0, truncate: bool = False) -> None:
    """Every embedding option that can be checked without the model (layers need it: see ``resolve_layer``)."""
    if not layers:
        raise InputError("--layers: give at least one layer, e.g. -1 or 6,12,-1")
    known = (*POOLINGS, *unirep.OWN_POOLINGS)  # which of them a model offers is checked once it is loaded
    if pooling is not None and pooling not in known:
        raise InputError(f"unknown pooling '{pooling}' (choose from {', '.join(known)})")
    check_range("--max-tokens", max_tokens, 8)
    check_range("--window", window, 1)
    if not truncate:
        check_range("--overlap", overlap, 0, None if window is None else window - 1)
    check_range("--checkpoint-every", checkpoint_every, 0)
    resolve_dtype(dtype, resolve_device(device))


#: ``int8`` keeps an fp32 model and runs its linear layers in int8 (``EsmPLM.forward(int8=True)``).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
#: torch's quantized engines whose int8 linear kernels ``--dtype int8`` was measured on.
INT8_ENGINES = ("x86", "fbgemm")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype of the model for ``dtype`` on ``device``; fp16 on CPU and int8 off CPU are refused.

    CPUs without fp16 units emulate it (no speed-up) and its 5-bit exponent overflows where bf16
    does not: bf16 is the CPU reduced precision where the CPU has bf16 units, int8 linear layers
    where it has only AVX2 (errors vs fp32 in benchmarks/results/precision*.md).
    """
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype '{dtype}' (choose from {', '.join(DTYPES)})")
    if dtype == "fp16" and device.type == "cpu":
        raise InputError("--dtype fp16 is not supported on CPU (no speed-up, overflow risk): use bf16 or fp32")
    if dtype == "int8":
        if device.type != "cpu":
            raise InputError(f"--dtype int8 is a CPU mode (int8 linear kernels); on {device.type} use bf16")
        if torch.backends.quantized.engine not in INT8_ENGINES:
            raise InputError(f"--dtype int8 needs torch's x86 int8 kernels; this torch offers "
                             f"'{torch.backends.quantized.engine}' (use fp32 or bf16)")
    return DTYPES[dtype]


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


_PART = re.compile(r"part-(\d{6})\.npz")


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``arrays``."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


class _Progress:
    """Crash-safe store of finished batches: one fsynced, atomically renamed ``.npz`` per flush.

    Each part records the run's fingerprint and a checksum of its arrays. Saved parts are verified,
    never trusted: one that cannot be read, fails its checksum, holds NaN/inf or belongs to another
    run (model, input or settings) is named on stderr, deleted, and its batches are computed again.
    The folder is created at the first flush, so a run that fails before any batch leaves nothing.
    """

    def __init__(self, folder: Path | None, fingerprint: str, n_batches: int) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.done: dict[int, dict[str, np.ndarray]] = {}
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        self._n = 0
        if folder is None or not folder.is_dir():
            return
        for stray in folder.glob(".*.tmp"):  # a part write killed before its rename
            stray.unlink()
        foreign = foreign_batches = 0
        for part in sorted(folder.iterdir()):
            m = _PART.fullmatch(part.name)
            if m is None:
                continue
            self._n = max(self._n, int(m.group(1)) + 1)
            problem, batches = self._verify(part, n_batches)
            if problem == "foreign":
                foreign += 1
                foreign_batches += len(batches)
            elif problem:
                warnings.warn(f"{part}: {problem}; discarded, its batches will be recomputed", stacklevel=3)
            else:
                self.done.update(batches)
                continue
            part.unlink()
        if foreign:
            warnings.warn(f"{folder}: discarded {foreign} saved part(s) ({foreign_batches} batches) of a different "
                          "run (other model, input or settings)", stacklevel=3)

    def _verify(self, part: Path, n_batches: int) -> tuple[str, dict[int, dict[str, np.ndarray]]]:
        """('', batches) for a sound part, else (what is wrong, batches if known)."""
        try:
            with np.load(part, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            fingerprint = str(arrays.pop("fingerprint"))
            checksum = str(arrays.pop("checksum"))
            stored_index = arrays.pop("batches")  # checksummed as stored: a retyped index is a damaged part
            index = stored_index.astype(np.int64).tolist()
        except Exception as e:  # noqa: BLE001 -- whatever numpy/zipfile raise for a damaged file
            return f"unreadable ({type(e).__name__}: truncated, zeroed or not a progress part)", {}
        batches = {b: {k[len(f"b{b}/"):]: v for k, v in arrays.items() if k.startswith(f"b{b}/")} for b in index}
        if fingerprint != self.fingerprint:
            return "foreign", batches
        if not all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f"):
            return "holds NaN or inf", batches
        if _checksum({**arrays, "batches": stored_index}) != checksum:
            return "checksum mismatch (damaged)", batches
        if not all(0 <= b < n_batches for b in index):
            return "batch numbers out of range", batches
        return "", batches

    def add(self, batch: int, arrays: dict[str, np.ndarray]) -> None:
        self.done[batch] = arrays
        if self.folder is not None:
            self.pending[batch] = arrays

    def flush(self) -> None:
        if self.folder is None or not self.pending:
            return
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True)
            fsync_dir(self.folder.parent)
        payload = {f"b{b}/{k}": v for b, arrs in self.pending.items() for k, v in arrs.items()}
        payload["batches"] = np.array(sorted(self.pending), dtype=np.int64)
        payload["checksum"] = np.array(_checksum(payload))
        payload["fingerprint"] = np.array(self.fingerprint)
        with atomic_path(self.folder / f"part-{self._n:06d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)
            _faults.point("part")
        self._n += 1
        self.pending = {}


def remove_progress(resume_dir: str | Path | None) -> None:
    """Delete saved progress; call it only once every output made from it is durable."""
    if resume_dir is not None and Path(resume_dir).exists():
        shutil.rmtree(resume_dir)


def _fingerprint(model: EsmPLM, seqs: Sequence[str], settings: dict) -> str:
    h = hashlib.sha256()
    h.update(model.weights_hash.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for s in seqs:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def _run_batch(model: EsmPLM, seqs: Sequence[str], chunks: list[Chunk], layers: list[int],
               device: torch.device, keep: list[bool], int8: bool = False) -> dict[str, np.ndarray]:
    """Forward one batch: per-chunk BOS vectors and residue sums, and residue arrays where ``keep``."""
    pieces = [seqs[c.seq][c.start : c.end] for c in chunks]
    if hasattr(model, "embed_batch"):  # a recurrent model (UniRep) returns these arrays, plus final states
        return model.embed_batch(pieces, layers, keep)
    toks, mask = model.alphabet.batch(pieces)
    out = model(torch.from_numpy(toks).to(device), repr_layers=layers, **({"int8": True} if int8 else {}))
    res_mask = torch.from_numpy(mask)
    res_mask[:, 0] = False
    res_mask[torch.arange(len(pieces)), torch.tensor([len(p) + 1 for p in pieces])] = False
    m = res_mask.to(device).unsqueeze(-1).to(torch.float32)
    result: dict[str, np.ndarray] = {}
    for layer in layers:
        hid = out.hidden[layer].to(torch.float32)
        result[f"bos{layer}"] = _owned(hid[:, 0])
        result[f"sum{layer}"] = (hid * m).sum(1).cpu().numpy()
        for j, p in enumerate(pieces):
            if keep[j]:
                result[f"res{layer}_{j}"] = _owned(hid[j, 1 : len(p) + 1])
    return result


def _owned(t: torch.Tensor) -> np.ndarray:
    """``t`` as an array owning its memory, copied once.

    A numpy view of a CPU slice would keep the whole [batch, tokens, dim] state alive for the rest
    of the run (~2 MB per batch at 35M); from an accelerator ``.cpu()`` already makes the copy.
    """
    return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()


def _forward_with_backoff(model, seqs, chunks, layers, device, keep, int8=False) -> dict[str, np.ndarray]:
    """Run a batch; on out-of-memory, run its halves instead (down to one chunk)."""
    try:
        return _run_batch(model, seqs, chunks, layers, device, keep, int8)
    except (RuntimeError, torch.OutOfMemoryError) as e:
        if not _is_oom(e) or len(chunks) == 1:
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(chunks) // 2
        a = _forward_with_backoff(model, seqs, chunks[:half], layers, device, keep[:half], int8)
        b = _forward_with_backoff(model, seqs, chunks[half:], layers, device, keep[half:], int8)
        merged = {k: np.concatenate([a[k], b[k]]) for k in a if not k.startswith("res")}
        merged.update({k: v for k, v in a.items() if k.startswith("res")})
        for k, v in b.items():
            if k.startswith("res"):
                layer, j = k[3:].split("_")
                merged[f"res{layer}_{int(j) + half}"] = v
        return merged


def embed_sequences(model: EsmPLM | KmerEmbedder | str | None, seqs: Sequence[str],
                    layers: Sequence[int] = (-1,), pooling: str | None = None, per_residue: bool = False,
                    max_tokens: int | None = None, device: str = "auto", dtype: str = "fp32",
                    truncate: bool = False, window: int | None = None, overlap: int = 256,
                    resume_dir: str | Path | None = None, checkpoint_every: float = 30.0,
                    progress: bool = True, keep_progress: bool = False) -> EmbedResult:
    """Embed sequences with any model; see the module docstring for how work is planned.

    ``window`` defaults to the model's reach (1022 residues for ESM-2); longer sequences are split
    into windows overlapping by ``overlap`` residues and per-residue states are averaged where
    windows overlap. A larger ``window`` is allowed (rotary positions extrapolate) but ESM-2 was
    trained on at most 1022 residues. ``truncate=True`` instead keeps only the first ``window`` residues (what
    fair-esm's extract.py does). ``resume_dir`` keeps finished batches so a killed run continues;
    it is removed when the result is returned unless ``keep_progress`` (then the caller removes it
    with :func:`remove_progress` once its own outputs are durable, as ``protlens embed`` does).
    ``pooling``: ``None`` = the model's default (:func:`resolve_pooling`). A recurrent model (UniRep)
    reads every sequence whole: windows do not apply.
    """
    check_embed_options(layers, pooling, dtype, device, max_tokens, window, overlap, checkpoint_every, truncate)
    owned = isinstance(model, (str, type(None)))  # loaded here, so ours to cast
    if owned:
        model = load_model(model or default_model_name())
    pooling = resolve_pooling(model, pooling)
    t0 = time.perf_counter()
    if isinstance(model, KmerEmbedder):
        if per_residue:
            raise InputError("the k-mer baseline has no per-residue embeddings")
        return EmbedResult(pooled={0: model.embed(list(seqs))}, seconds=time.perf_counter() - t0)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    max_tokens = resolve_max_tokens(max_tokens or getattr(model, "default_max_tokens", None), dev)
    layer_ids = [model.resolve_layer(i) for i in layers]
    unique_layers = sorted(set(layer_ids))
    recurrent = getattr(model, "recurrent", False)
    if recurrent and (window is not None or truncate):
        raise InputError(f"{model.name} reads sequences of any length whole: --window and --truncate do not apply")
    if dtype == "int8" and not isinstance(model, EsmPLM):
        raise InputError(f"--dtype int8 applies to ESM models; {model.name} runs in fp32 or bf16")
    win = None if recurrent else window or model.max_residues
    plan = plan_batches([len(s) for s in seqs], win, overlap, max_tokens, truncate)
    settings = dict(layers=unique_layers, window=win, overlap=overlap, max_tokens=max_tokens, truncate=truncate,
                    dtype=dtype, per_residue=per_residue, device=dev.type)
    store = _Progress(Path(resume_dir) if resume_dir else None, _fingerprint(model, seqs, settings),
                      len(plan.batches))

    if model.device != dev or model.dtype != torch_dtype:
        # a model the caller passed is never cast: a bf16 round trip would round its fp32 weights
        model = (model if owned else copy.deepcopy(model)).to(device=dev, dtype=torch_dtype)
    n_res = sum(c.end - c.start for c in plan.chunks)
    todo = [b for b in range(len(plan.batches)) if b not in store.done]
    windowed = set(plan.windowed)
    last_flush = time.monotonic()
    with _progress_bar(progress, len(seqs), n_res) as bar, torch.inference_mode():
        for b in range(len(plan.batches)):
            chunks = [plan.chunks[c] for c in plan.batches[b]]
            if b in todo:
                keep = [per_residue or c.seq in windowed for c in chunks]
                arrays = _forward_with_backoff(model, seqs, chunks, unique_layers, dev, keep, dtype == "int8")
                _check_finite(arrays, chunks, dtype)
                store.add(b, arrays)
                _faults.log_batch(b)
                _faults.point("batch")
                if time.monotonic() - last_flush >= checkpoint_every:
                    store.flush()
                    last_flush = time.monotonic()
            bar(len({c.seq for c in chunks}), sum(c.end - c.start for c in chunks))
    store.flush()
    _faults.point("assemble")
    result = _assemble(seqs, plan, store.done, unique_layers, layer_ids, pooling, per_residue, model.hidden_size,
                       model.pooled_size(pooling) if recurrent else None)
    result.seconds, result.max_tokens = time.perf_counter() - t0, max_tokens
    if not keep_progress:
        remove_progress(resume_dir)
    return result


def _check_finite(arrays: dict[str, np.ndarray], chunks: list[Chunk], dtype: str) -> None:
    """Stop at the first batch whose states hold NaN/inf (a broken model or fp16 overflow)."""
    for k, v in arrays.items():
        if not np.isfinite(v).all():
            j = int(k.split("_")[1]) if k.startswith("res") else int(np.flatnonzero(~np.isfinite(v).all(1))[0])
            hint = " (try --dtype fp32)" if dtype != "fp32" else ""
            raise InputError(f"the model produced NaN or inf for input record #{chunks[j].seq + 1}{hint}")


def _assemble(seqs, plan: Plan, done, unique_layers, layer_ids, pooling, per_residue, dim,
              pooled_dim: int | None = None) -> EmbedResult:
    """Stitch chunk results into per-sequence outputs: where windows overlap, residue states are
    combined under :data:`~protlens.pp._windows.WINDOW_RULE`, and the mean pooling of a windowed
    sequence is the mean of its stitched residue states. ``pooled_dim``: the pooled vector's size
    when it is not ``dim`` (UniRep fusion)."""
    n = len(seqs)
    windowed = set(plan.windowed)
    stitch = set(range(n)) if per_residue else windowed
    pooled = {layer: np.zeros((n, pooled_dim or dim), dtype=np.float32) for layer in unique_layers}
    n_chunks = np.zeros(n)
    residues = {layer: {i: np.zeros((len(seqs[i]), dim), dtype=np.float32) for i in stitch} for layer in unique_layers}
    coverage = {i: np.zeros(len(seqs[i]), dtype=bool) for i in stitch}
    by_seq: dict[int, list[int]] = {}
    for c, ch in enumerate(plan.chunks):
        if ch.seq in stitch:
            by_seq.setdefault(ch.seq, []).append(c)
    weight = {}
    for i, cs in by_seq.items():
        spans = [(plan.chunks[c].start, plan.chunks[c].end) for c in cs]
        weight.update(zip(cs, residue_weights(spans, len(seqs[i]))))
    for b, batch in enumerate(plan.batches):
        arrs = done[b]
        for j, c in enumerate(batch):
            ch = plan.chunks[c]
            i = ch.seq
            n_chunks[i] += 1
            if i in stitch:
                coverage[i][ch.start : ch.end] = True
            for layer in unique_layers:
                if pooling in unirep.OWN_POOLINGS:
                    pooled[layer][i] = unirep.pool(arrs, j, layer, pooling, ch.end - ch.start)
                elif pooling == "bos":
                    pooled[layer][i] += arrs[f"bos{layer}"][j]
                elif i not in windowed:
                    pooled[layer][i] += arrs[f"sum{layer}"][j] / (ch.end - ch.start)
                if i in stitch:
                    residues[layer][i][ch.start : ch.end] += weight[c][:, None] * arrs[f"res{layer}_{j}"]
    for layer in unique_layers:
        for i in stitch:
            arr = residues[layer][i][coverage[i]]  # truncation leaves a tail uncovered
            residues[layer][i] = arr
            if pooling == "mean" and i in windowed:
                pooled[layer][i] = arr.mean(0)
        if pooling == "bos":
            pooled[layer] /= n_chunks[:, None]
    order = list(dict.fromkeys(layer_ids))
    per = {layer: [residues[layer][i] for i in range(n)] for layer in order} if per_residue else None
    return EmbedResult(pooled={layer: pooled[layer] for layer in order}, per_residue=per, n_windowed=len(windowed))


class _progress_bar:
    """A rich progress bar with sequences/s and residues/s (silent when disabled)."""

    def __init__(self, enabled: bool, n_seqs: int, n_res: int) -> None:
        self.enabled = enabled
        self.n_seqs = n_seqs
        self.n_res = n_res

    def __enter__(self):
        if not self.enabled:
            return lambda s, r: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.t0 = time.perf_counter()
        self.res = 0
        self.prog = Progress(TextColumn("embedding"), BarColumn(), TextColumn("{task.completed}/{task.total} seqs"),
                             TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             transient=False)
        self.prog.start()
        self.task = self.prog.add_task("embed", total=self.n_seqs, rate="")

        def update(seqs: int, residues: int) -> None:
            self.res += residues
            dt = max(time.perf_counter() - self.t0, 1e-9)
            done = self.prog.tasks[0].completed + seqs
            self.prog.update(self.task, completed=min(done, self.n_seqs),
                             rate=f"{done / dt:.1f} seq/s, {self.res / dt:,.0f} res/s")

        return update

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.prog.stop()


def set_embedding(adata, matrix: np.ndarray, var_prefix: str = "dim") -> None:
    """Replace ``adata.X`` by a matrix with a different number of columns, keeping everything else."""
    import anndata as ad
    import pandas as pd

    var = pd.DataFrame(index=[f"{var_prefix}{j}" for j in range(matrix.shape[1])])
    new = ad.AnnData(X=matrix, obs=adata.obs, var=var, uns=dict(adata.uns), obsm=dict(adata.obsm),
                     obsp=dict(adata.obsp))
    adata.__dict__.update(new.__dict__)


def store_embedding(adata, model: EsmPLM | KmerEmbedder, pooled: dict[int, np.ndarray], *, pooling: str,
                    window: int | None, overlap: int, truncate: bool, n_windowed: int, max_tokens: int,
                    device: str, dtype: str, seconds: float) -> dict:
    """Put pooled layers in ``X``/``obsm`` and return the provenance record every engine writes."""
    from .. import __version__

    resolved = list(pooled)
    set_embedding(adata, pooled[resolved[0]])
    neural = model.is_neural
    if not neural:
        adata.var_names = model.feature_names()  # k-mer profiles: each column is a k-mer
    for layer in resolved[1:]:
        adata.obsm[K.layer_key(layer)] = pooled[layer]
    windowed = neural and not getattr(model, "recurrent", False)  # a recurrent model reads sequences whole
    info = {
        "model": model.name, "source": model.source, "weights_hash": model.weights_hash,
        "layers": resolved, "pooling": pooling if neural else "kmer-profile",
        "window": (window or model.max_residues) if windowed else 0,
        "overlap": overlap if windowed else 0, "window_rule": WINDOW_RULE if windowed else "none",
        "truncate": truncate, "n_windowed": n_windowed,
        "max_tokens": max_tokens, "device": device, "dtype": dtype,
        "seconds": round(seconds, 3), "protlens_version": __version__, "torch_version": torch.__version__,
    }
    if getattr(model, "weights_sha256", ""):  # weights read from another package's file (UniRep)
        info.update(weights_file=model.weights_file, weights_sha256=model.weights_sha256)
    if neural and str(device).startswith("cpu"):
        info["cpu"] = cpu_provenance()
    if dtype == "int8":
        info["int8"] = {"engine": torch.backends.quantized.engine, "layers": "QKV, attention output, fc1, fc2",
                        "weights": "symmetric, one scale per output channel",
                        "activations": "dynamic, one range per sequence, 7-bit"}
    return info


def cpu_provenance() -> dict:
    """The CPU facts the kernels were picked from, at run time (never the build machine's).

    ATen dispatches its vector kernels by ``get_cpu_capability()`` (AVX2, AVX512; ``ATEN_CPU_CAPABILITY``
    can lower it), and MKL / oneDNN choose AVX2, AVX-512 or AMX code the same way, so a result
    records what this CPU reported.
    """
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "avx512f": "avx512f" in flags, "amx_tile": "amx_tile" in flags, "amx_bf16": "amx_bf16" in flags}


def embed(adata, model: EsmPLM | KmerEmbedder | str | None = None, layers: Sequence[int] = (-1,),
          pooling: str | None = None, per_residue_file: str | Path | None = None, max_tokens: int | None = None,
          device: str = "auto", dtype: str = "fp32", truncate: bool = False, window: int | None = None,
          overlap: int = 256, resume_dir: str | Path | None = None, checkpoint_every: float = 30.0,
          progress: bool = True, keep_progress: bool = False) -> None:
    """Embed ``adata.obs['sequence']`` into ``X`` (first layer) and ``obsm['X_layer<n>']`` (others).

    Provenance (model, weights hash, layers, pooling, windows, versions) goes to ``uns['embed']``;
    per-residue states, if a file is given, to a sidecar HDF5 (group ``layer<n>``, one dataset per
    record) written atomically. Saved progress in ``resume_dir`` is removed after the sidecar is
    written, unless ``keep_progress`` (see :func:`embed_sequences`).
    """
    if isinstance(model, (str, type(None))):
        model = load_model(model or default_model_name())
    pooling = resolve_pooling(model, pooling)
    seqs = adata.obs[K.SEQUENCE].astype(str).tolist()
    res = embed_sequences(model, seqs, layers=layers, pooling=pooling, per_residue=per_residue_file is not None,
                          max_tokens=max_tokens, device=device, dtype=dtype, truncate=truncate, window=window,
                          overlap=overlap, resume_dir=resume_dir, checkpoint_every=checkpoint_every,
                          progress=progress, keep_progress=True)
    neural = model.is_neural
    info = store_embedding(adata, model, res.pooled, pooling=pooling, window=window, overlap=overlap,
                           truncate=truncate, n_windowed=res.n_windowed, max_tokens=res.max_tokens,
                           device=str(resolve_device(device)) if neural else "cpu", dtype=dtype, seconds=res.seconds)
    if res.per_residue is not None:
        path = Path(per_residue_file)
        check_free_space(path, sum(a.nbytes for arrays in res.per_residue.values() for a in arrays))
        with atomic_path(path) as tmp:
            for layer, arrays in res.per_residue.items():
                write_residues(tmp, dict(zip(adata.obs_names, arrays)), group=f"layer{layer}")
            _faults.point("sidecar")
        adata.uns[K.PER_RESIDUE] = str(path)
    adata.uns[K.EMBED] = info
    if not keep_progress:
        remove_progress(resume_dir)
