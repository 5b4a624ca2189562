"""Alignment-free k-mer profile embedder: the baseline every PLM number is read against."""

from __future__ import annotations

import itertools

import numpy as np

from ..io import STANDARD_AA


class KmerEmbedder:
    """L2-normalised counts of overlapping k-mers over the 20 standard residues (no weights).

    Residues outside the 20 are skipped (k-mers containing them are not counted). With
    ``k_values=(1, 2, 3)`` the profiles of each k are concatenated after per-k normalisation.
    """

    has_logits = False
    is_neural = False
    num_layers = 0
    max_residues = None

    def __init__(self, k_values: tuple[int, ...] = (3,)) -> None:
        self.k_values = tuple(k_values)
        self.name = "kmer" + "".join(str(k) for k in self.k_values)
        self.source = "builtin:kmer"
        self.hidden_size = sum(20**k for k in self.k_values)
        self._lut = np.full(256, -1, dtype=np.int64)
        for i, a in enumerate(STANDARD_AA):
            self._lut[ord(a)] = i

    @property
    def weights_hash(self) -> str:
        return "none"

    def feature_names(self) -> list[str]:
        return ["".join(p) for k in self.k_values for p in itertools.product(STANDARD_AA, repeat=k)]

    def _profile(self, seq: str, k: int) -> np.ndarray:
        idx = self._lut[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
        out = np.zeros(20**k, dtype=np.float32)
        n = len(idx) - k + 1
        if n <= 0:
            return out
        windows = np.lib.stride_tricks.sliding_window_view(idx, k)
        valid = (windows >= 0).all(axis=1)
        codes = (windows[valid] * (20 ** np.arange(k - 1, -1, -1))).sum(axis=1)
        np.add.at(out, codes, 1.0)
        norm = np.linalg.norm(out)
        return out / norm if norm > 0 else out

    def embed(self, seqs: list[str]) -> np.ndarray:
        """(n, hidden_size) float32 profile matrix."""
        return np.stack([np.concatenate([self._profile(s, k) for k in self.k_values]) for s in seqs])
