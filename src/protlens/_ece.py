"""Masked-token ECE (exponentiated cross-entropy, ComproESM section 5.2 / Table 3): the one definition.

The trainer, distillation, the benchmark and the model cards all score held-out sequences with
these functions, so a number called "ECE" means the same thing everywhere:

* 15% of the residues of each sequence (at least one) are picked;
* every picked residue is replaced by ``<mask>`` (no BERT 80/10/10 corruption at evaluation);
* the model's distribution at a picked position is renormalised over the 25 amino-acid tokens
  (a uniform guess scores exactly 25);
* ECE = exp(mean over all picked residues of the negative log-probability of the true residue).

It sits at the models level (it needs only the ESM alphabet), below both ``train`` and ``bench``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .models import ESM_ALPHABET

#: The 25 amino-acid tokens of the ESM alphabet (20 standard + X B U Z O).
AA_TOKENS = "ACDEFGHIKLMNPQRSTVWYXBUZO"
#: Their indices in the ESM alphabet: the logit columns the ECE keeps.
AA_TOKEN_IDS = [ESM_ALPHABET.tok_to_idx[a] for a in AA_TOKENS]
MASK_FRACTION = 0.15
DEFINITION = ("masked-token ECE: 15% of the residues of each held-out sequence (at least one) all replaced by "
              "<mask>, softmax renormalised over the 25 amino-acid tokens (uniform = 25), "
              "exp(mean cross-entropy) over the masked residues")


def n_masked(length: int, fraction: float = MASK_FRACTION) -> int:
    """How many residues of a ``length``-residue sequence are picked: round(fraction * length), at least one."""
    return max(1, int(round(fraction * length)))


def mask_positions(lengths: list[int], rng: np.random.Generator, fraction: float = MASK_FRACTION) -> list[np.ndarray]:
    """Sorted 0-based residue positions to mask, :func:`n_masked` of each sequence."""
    return [np.sort(rng.choice(n, size=n_masked(n, fraction), replace=False)) for n in lengths]


def aa_nll(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position -log p(target) with the softmax renormalised over the 25 amino-acid tokens.

    ``scores``: [N, vocab] logits or log-probabilities (any per-row constant cancels) at the masked
    positions; ``targets``: [N] ESM token ids of the true residues (each must be an amino-acid token).
    """
    aa = torch.as_tensor(AA_TOKEN_IDS, device=scores.device)
    column = torch.full((scores.shape[-1],), -1, dtype=torch.long, device=scores.device)
    column[aa] = torch.arange(len(AA_TOKEN_IDS), device=scores.device)
    idx = column[targets]
    if (idx < 0).any():
        raise ValueError("a masked target is not one of the 25 amino-acid tokens")
    return torch.nn.functional.cross_entropy(scores[:, aa].float(), idx, reduction="none")


def ece(total_nll: float, count: int) -> float:
    """exp(mean negative log-likelihood); NaN when nothing was scored."""
    return math.exp(total_nll / count) if count else float("nan")


def describe(value: float) -> str:
    """An ECE with its scale, for printouts: ``'19.0 (uniform guess = 25, lower is better)'``."""
    return f"{value:.2f} (uniform guess = {len(AA_TOKENS)}, lower is better)"
