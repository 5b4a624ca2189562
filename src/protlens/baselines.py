"""What a bioinformatician would use instead of a PLM: alignment similarity and MMseqs2 clusters.

Every PLM clustering result is read against these. ``alignment_similarity`` gives an all-vs-all
Smith-Waterman score matrix (parasail's striped SIMD kernels) that ``tl.cluster(...,
use_graph=...)`` clusters with spectral, agglomerative or Leiden; ``mmseqs_cluster`` runs the
``mmseqs easy-cluster`` binary itself, the tool most users reach for first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ._progress import track
from .errors import InputError
from .tl._utils import as_categorical_labels, check_n_obs

#: Residues parasail's matrices lack (selenocysteine, pyrrolysine) are scored as unknown.
_UNKNOWN = str.maketrans({"U": "X", "O": "X"})
MMSEQS = "mmseqs"


def _matrix(name: str):
    import parasail

    matrix = getattr(parasail, name.lower(), None)
    if matrix is None or not hasattr(matrix, "matrix"):
        raise InputError(f"alignment: unknown substitution matrix '{name}' (e.g. blosum62, blosum45, pam250)")
    return matrix


def _rows(seqs: list[str], rows: range, matrix_name: str, gap_open: int, gap_extend: int) -> np.ndarray:
    """Raw SW scores of seqs[i] against seqs[i:] for i in rows (upper triangle, one row each)."""
    import parasail

    matrix = _matrix(matrix_name)
    out = np.zeros((len(rows), len(seqs)), dtype=np.float64)
    for r, i in enumerate(rows):
        profile = parasail.profile_create_sat(seqs[i], matrix)
        for j in range(i, len(seqs)):
            out[r, j] = parasail.sw_striped_profile_sat(profile, seqs[j], gap_open, gap_extend).score
    return out


def alignment_similarity(seqs: Sequence[str], matrix: str = "blosum62", gap_open: int = 11, gap_extend: int = 1,
                         normalize: bool = True, n_jobs: int = -1, ids: Sequence[str] | None = None,
                         progress: bool = False) -> np.ndarray:
    """All-vs-all local alignment scores (n x n, symmetric).

    ``normalize=True`` returns ``s_ij / sqrt(s_ii s_jj)`` in [0, 1] (1 on the diagonal), which
    removes the length dependence of raw scores so that short and long members of one family
    look alike. ``n_jobs`` threads share the rows (-1 = all cores).
    """
    seqs = [str(s).upper().translate(_UNKNOWN) for s in seqs]
    ids = list(ids) if ids is not None else [str(i) for i in range(len(seqs))]
    check_n_obs(len(seqs), "alignment")
    empty = [ids[i] for i, s in enumerate(seqs) if not s]
    if empty:
        raise InputError(f"alignment: empty sequence(s): {', '.join(empty[:5])}")
    _matrix(matrix)
    n = len(seqs)
    # Row i costs n - i alignments: interleave rows so each worker gets a similar share.
    # Threads, not processes: parasail's ctypes calls release the GIL, and threads start free.
    # Many small interleaved chunks keep the shares even and let a progress bar move.
    workers = 1 if n < 50 else ((os.cpu_count() or 1) if n_jobs in (-1, None) else max(1, int(n_jobs)))
    n_chunks = min(n, max(workers, 64))
    chunks = [range(w, n, n_chunks) for w in range(n_chunks)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(track(pool.map(lambda c: _rows(seqs, c, matrix, gap_open, gap_extend), chunks),
                           f"aligning {n} sequences all-vs-all", total=n_chunks, enabled=progress))
    S = np.zeros((n, n), dtype=np.float64)
    for c, part in zip(chunks, parts):
        S[list(c)] = part
    S = np.triu(S) + np.triu(S, 1).T
    if not normalize:
        return S
    self_scores = np.diag(S).copy()
    bad = np.flatnonzero(self_scores <= 0)
    if len(bad):
        raise InputError(f"alignment: sequence(s) with no positive self-alignment score (all unknown residues?): "
                         f"{', '.join(ids[i] for i in bad[:5])}")
    scale = np.sqrt(self_scores)
    return np.clip(S / scale[:, None] / scale[None, :], 0.0, 1.0)


def alignment(adata: ad.AnnData, key_added: str = "alignment", progress: bool = False, **params) -> None:
    """``obsp[key_added]`` = normalised all-vs-all alignment similarity of ``obs["sequence"]``."""
    if "sequence" not in adata.obs:
        raise InputError("alignment: obs has no 'sequence' column")
    params.setdefault("normalize", True)
    S = alignment_similarity(adata.obs["sequence"].tolist(), ids=list(adata.obs_names), progress=progress, **params)
    adata.obsp[key_added] = S
    adata.uns[key_added] = {"params": {"method": "smith-waterman (parasail striped, saturating)", **params}}


def mmseqs_version(binary: str = MMSEQS) -> str:
    path = shutil.which(binary)
    if path is None:
        raise InputError(f"mmseqs_cluster: the '{binary}' binary is not on PATH; install MMseqs2 "
                         "(Debian/Ubuntu: apt-get install mmseqs2; or conda install -c bioconda mmseqs2)")
    return subprocess.run([path, "version"], capture_output=True, text=True).stdout.strip()


def mmseqs_cluster(seqs: Sequence[str], ids: Sequence[str] | None = None, min_seq_id: float = 0.3,
                   coverage: float = 0.8, cov_mode: int = 0, cluster_mode: int = 0, sensitivity: float | None = None,
                   threads: int = 1, binary: str = MMSEQS) -> np.ndarray:
    """Cluster labels (0 = largest cluster) from ``mmseqs easy-cluster``, in input order.

    Parameters map onto the mmseqs flags ``--min-seq-id``, ``-c``, ``--cov-mode``,
    ``--cluster-mode`` and ``-s``. Sequences are written under their index, so any id works.
    """
    ids = list(ids) if ids is not None else [str(i) for i in range(len(seqs))]
    if len(ids) != len(seqs):
        raise InputError(f"mmseqs_cluster: {len(ids)} ids for {len(seqs)} sequences")
    dupes = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(dupes):
        raise InputError(f"mmseqs_cluster: duplicate id(s): {', '.join(map(str, dupes[:5]))}")
    check_n_obs(len(seqs), "mmseqs_cluster")
    if not 0.0 <= min_seq_id <= 1.0 or not 0.0 <= coverage <= 1.0:
        raise InputError("mmseqs_cluster: min_seq_id and coverage must be fractions in [0, 1]")
    mmseqs_version(binary)
    with tempfile.TemporaryDirectory(prefix="protlens_mmseqs_") as tmp:
        tmp = Path(tmp)
        fasta = tmp / "input.fasta"
        fasta.write_text("".join(f">{i}\n{s}\n" for i, s in enumerate(seqs)))
        cmd = [shutil.which(binary), "easy-cluster", str(fasta), str(tmp / "out"), str(tmp / "work"),
               "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", str(cov_mode),
               "--cluster-mode", str(cluster_mode), "--threads", str(threads), "-v", "1"]
        if sensitivity is not None:
            cmd += ["-s", str(sensitivity)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise InputError(f"mmseqs_cluster: mmseqs easy-cluster failed (exit {proc.returncode}): {tail}")
        pairs = pd.read_csv(tmp / "out_cluster.tsv", sep="\t", header=None, names=["rep", "member"], dtype=int)
    labels = np.full(len(seqs), -1, dtype=np.int64)
    labels[pairs["member"].to_numpy()] = pd.factorize(pairs["rep"])[0]
    if (labels < 0).any():
        raise InputError(f"mmseqs_cluster: mmseqs left {int((labels < 0).sum())} sequence(s) unassigned")
    return as_categorical_labels(labels)


def mmseqs(adata: ad.AnnData, key_added: str = "mmseqs", **params) -> None:
    """``obs[key_added]`` = MMseqs2 clusters of ``obs["sequence"]``; found by ``tl.evaluate``."""
    if "sequence" not in adata.obs:
        raise InputError("mmseqs: obs has no 'sequence' column")
    labels = mmseqs_cluster(adata.obs["sequence"].tolist(), ids=list(adata.obs_names), **params)
    k = int(labels.max()) + 1
    adata.obs[key_added] = pd.Categorical(labels.astype(str), categories=[str(i) for i in range(k)])
    adata.uns[key_added] = {"params": {"method": "mmseqs", **params}, "n_clusters": k,
                            "version": mmseqs_version(params.get("binary", MMSEQS))}
