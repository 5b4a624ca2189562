"""Deletion curves: does the explained model really depend on the residues an explanation ranks first?

For each fraction k (5%..50% of the residues) the top-k residues by importance are deleted and the drop
in the assigned cluster's log-odds is recorded, next to the same number of randomly chosen residues
(averaged over ``n_random`` draws). A faithful explanation drops the score faster than random; the
*area between the curves* (mean gap over the k grid, in log-odds) summarises it per protein.

"Deleting" means what the model sees as absence: a zero row for the surrogate (its integrated-gradients
baseline) and the ``<mask>`` token for the PLM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 11))


@dataclass
class DeletionCurves:
    """Score drops ``(n_proteins, n_fractions)`` when deleting top-ranked vs random residues."""

    fractions: np.ndarray
    top: np.ndarray
    random: np.ndarray

    @property
    def area(self) -> np.ndarray:
        """Area between the curves per protein, normalised by the k range (mean log-odds gap)."""
        gap = self.top - self.random
        span = self.fractions[-1] - self.fractions[0]
        return np.trapezoid(gap, self.fractions, axis=1) / span if span > 0 else gap[:, 0]

    def summary(self) -> dict[str, float]:
        area = self.area
        return {
            "area_between_curves": float(area.mean()),
            "area_sd": float(area.std(ddof=1)) if len(area) > 1 else 0.0,
            "frac_proteins_above_random": float(np.mean(area > 0)),
            "drop_top_10pct": float(self.top[:, np.argmin(np.abs(self.fractions - 0.1))].mean()),
            "drop_random_10pct": float(self.random[:, np.argmin(np.abs(self.fractions - 0.1))].mean()),
            "drop_top_50pct": float(self.top[:, -1].mean()),
            "drop_random_50pct": float(self.random[:, -1].mean()),
        }


def deletion_masks(track: np.ndarray, fractions: Sequence[float], n_random: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boolean deletion masks: ``(n_fractions, L)`` for the top-ranked, ``(n_fractions * n_random, L)`` random."""
    L = len(track)
    order = np.argsort(-track, kind="stable")
    top = np.zeros((len(fractions), L), dtype=bool)
    rand = np.zeros((len(fractions) * n_random, L), dtype=bool)
    for j, f in enumerate(fractions):
        n = max(1, int(round(f * L)))
        top[j, order[:n]] = True
        for r in range(n_random):
            rand[j * n_random + r, rng.choice(L, n, replace=False)] = True
    return top, rand


def deletion_curves(score_fn: Callable[[int, np.ndarray], np.ndarray], tracks: Sequence[np.ndarray],
                    fractions: Sequence[float] = FRACTIONS, n_random: int = 5, random_state: int = 0) -> DeletionCurves:
    """Curves for many proteins. ``score_fn(i, masks)`` returns the assigned-cluster score of protein ``i``
    under each boolean deletion mask (row of ``masks``; an all-False row is the intact protein)."""
    rng = np.random.default_rng(random_state)
    fr = np.asarray(fractions, dtype=float)
    top_d = np.zeros((len(tracks), len(fr)))
    rand_d = np.zeros((len(tracks), len(fr)))
    for i, track in enumerate(tracks):
        top, rand = deletion_masks(np.asarray(track), fr, n_random, rng)
        masks = np.concatenate([np.zeros((1, len(track)), dtype=bool), top, rand])
        s = np.asarray(score_fn(i, masks), dtype=float)
        top_d[i] = s[0] - s[1 : 1 + len(fr)]
        rand_d[i] = s[0] - s[1 + len(fr) :].reshape(len(fr), n_random).mean(1)
    return DeletionCurves(fr, top_d, rand_d)


def surrogate_scorer(score_model: torch.nn.Module, X: Sequence[np.ndarray], targets: Sequence[int],
                     batch_size: int = 64) -> Callable[[int, np.ndarray], np.ndarray]:
    """``score_fn`` for a :class:`~protlens.explain.attribution.SurrogateScore`: deleted rows become zeros."""

    @torch.no_grad()
    def score(i: int, masks: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(X[i], dtype=torch.float32)
        out = []
        for s in range(0, len(masks), batch_size):
            m = torch.from_numpy(masks[s : s + batch_size])
            out.append(score_model(x.unsqueeze(0) * (~m).unsqueeze(-1))[:, targets[i]])
        return torch.cat(out).numpy()

    return score


def plm_scorer(score_model: torch.nn.Module, seqs: Sequence[str], targets: Sequence[int],
               batch_size: int = 16) -> Callable[[int, np.ndarray], np.ndarray]:
    """``score_fn`` for a :class:`~protlens.explain.attribution.PLMClusterScore`: deleted residues become ``<mask>``."""
    plm = score_model.plm

    @torch.no_grad()
    def score(i: int, masks: np.ndarray) -> np.ndarray:
        toks = torch.from_numpy(plm.alphabet.batch([seqs[i]])[0]).to(plm.device)
        out = []
        for s in range(0, len(masks), batch_size):
            m = torch.from_numpy(masks[s : s + batch_size]).to(plm.device)
            t = toks.expand(len(m), -1).clone()
            t[:, 1 : len(seqs[i]) + 1] = t[:, 1 : len(seqs[i]) + 1].masked_fill(m, plm.alphabet.mask_idx)
            out.append(score_model(plm.embed_tokens(t), t)[:, targets[i]])
        return torch.cat(out).cpu().numpy()

    return score
