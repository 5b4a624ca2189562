"""The ESM-2 vocabulary (identical in fair-esm and HF checkpoints) and fast vectorised encoding."""

from __future__ import annotations

import numpy as np

#: Token order of every ESM-2 checkpoint (fair-esm ``Alphabet.from_architecture("ESM-1b")``).
ESM_TOKENS: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)


class Alphabet:
    """Maps residues to token ids with one table lookup per sequence (no Python loop per residue)."""

    #: Whether rows end with ``<eos>`` (ESM) or only with padding (a left-to-right model such as UniRep).
    appends_eos = True

    def __init__(self, tokens: tuple[str, ...] = ESM_TOKENS) -> None:
        self.tokens = tokens
        self.tok_to_idx = {t: i for i, t in enumerate(tokens)}
        self.cls_idx = self.tok_to_idx["<cls>"]
        self.pad_idx = self.tok_to_idx["<pad>"]
        self.eos_idx = self.tok_to_idx["<eos>"]
        self.unk_idx = self.tok_to_idx["<unk>"]
        self.mask_idx = self.tok_to_idx["<mask>"]
        self._lut = np.full(256, self.unk_idx, dtype=np.int64)
        for t, i in self.tok_to_idx.items():
            if len(t) == 1:
                self._lut[ord(t)] = i

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, seq: str) -> np.ndarray:
        """Residue ids of ``seq`` without BOS/EOS."""
        return self._lut[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]

    def batch(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``<cls> seq <eos>`` token matrix and its boolean attention mask."""
        width = max(len(s) for s in seqs) + 2
        toks = np.full((len(seqs), width), self.pad_idx, dtype=np.int64)
        for row, s in enumerate(seqs):
            toks[row, 0] = self.cls_idx
            toks[row, 1 : len(s) + 1] = self.encode(s)
            if self.appends_eos:
                toks[row, len(s) + 1] = self.eos_idx
        return toks, toks != self.pad_idx


ESM_ALPHABET = Alphabet()
