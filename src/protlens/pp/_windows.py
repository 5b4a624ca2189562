"""Windows over sequences longer than a model's reach, and the one rule that stitches them.

A window's first and last residues sit next to an artificial BOS/EOS (the protein continues
there), so they see less context than central residues and differ most from a full-context pass.
One would expect weighting windows towards their centres to help; measured against the
full-context pass (``benchmarks/window_stitching.py``, results in
``benchmarks/results/window_stitching.md``), plain averaging of every covering window came closest
for per-residue states, pooled vectors and log-probabilities, on a random and on a trained model:
two estimates with partly independent errors beat the single more central one. So every consumer
of windows (pooled and per-residue embeddings, ECE, mutation scoring) weighs a residue's value from
each covering window by :func:`residue_weights` / :func:`span_weights` under :data:`WINDOW_RULE`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: ``uniform``: every covering window counts the same; ``centre-weighted``: a window counts in
#: proportion to the residue's distance from that window's nearest artificial end; ``most-central``:
#: only the window in which the residue is farthest from an artificial end counts.
WINDOW_RULES = ("uniform", "centre-weighted", "most-central")
WINDOW_RULE = "uniform"


def window_spans(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Overlapping windows covering ``length`` residues, the last one flush with the end."""
    if length <= window:
        return [(0, length)]
    if not 0 <= overlap < window:
        raise InputError(f"window overlap {overlap} must be in [0, window={window})")
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    return [(s, s + window) for s in starts]


def edge_distance(span: tuple[int, int], length: int) -> np.ndarray:
    """Per residue of ``span``: 1 + its distance to the window's nearest artificial end (a true
    end of the protein is not artificial; a window covering the whole protein gets ``length + 1``)."""
    s, e = span
    i = np.arange(s, e)
    far = length + 1
    left = i - s + 1 if s > 0 else np.full(e - s, far)
    right = e - i if e < length else np.full(e - s, far)
    return np.minimum(left, right).astype(np.float64)


def residue_weights(spans: list[tuple[int, int]], length: int, rule: str = WINDOW_RULE) -> list[np.ndarray]:
    """Each window's weight per residue it covers; at every covered residue the weights sum to 1."""
    if rule not in WINDOW_RULES:
        raise InputError(f"unknown window rule '{rule}' (choose from {', '.join(WINDOW_RULES)})")
    dist = [edge_distance(sp, length) for sp in spans]
    raw = []
    if rule == "most-central":
        best = np.zeros(length)
        for (s, e), d in zip(spans, dist):
            best[s:e] = np.maximum(best[s:e], d)
        taken = np.zeros(length, dtype=bool)
        for (s, e), d in zip(spans, dist):  # ties go to the earlier window
            w = (d == best[s:e]) & ~taken[s:e]
            taken[s:e] |= w
            raw.append(w.astype(np.float64))
    else:
        raw = [np.ones(e - s) if rule == "uniform" else d for (s, e), d in zip(spans, dist)]
    total = np.zeros(length)
    for (s, e), w in zip(spans, raw):
        total[s:e] += w
    return [w / np.where(total[s:e] > 0, total[s:e], 1.0) for (s, e), w in zip(spans, raw)]


def stitch(spans: list[tuple[int, int]], arrays: list[np.ndarray], length: int,
           rule: str = WINDOW_RULE) -> np.ndarray:
    """Per-residue arrays of overlapping windows -> one array over the covered residues."""
    out = np.zeros((length, *arrays[0].shape[1:]), dtype=np.float64)
    covered = np.zeros(length, dtype=bool)
    for (s, e), w, a in zip(spans, residue_weights(spans, length, rule), arrays):
        out[s:e] += w.reshape(-1, *([1] * (a.ndim - 1))) * a
        covered[s:e] = True
    return out[covered].astype(arrays[0].dtype)


def scoring_spans(length: int, window: int) -> list[tuple[int, int]]:
    """The fixed tiling (windows overlapping by half) that log-probability readers (ECE, mutation
    scoring) share, so that positions and variants share forward passes."""
    return window_spans(length, window, window // 2)


def span_weights(spans: list[tuple[int, int]], positions: list[int], length: int,
                 rule: str = WINDOW_RULE) -> list[tuple[tuple[int, int], float]]:
    """The windows that hold all ``positions`` together, each with its weight under ``rule``
    (weights sum to 1; empty when no window holds them all).

    A window's weight is that of its least central position, so a set of positions is read the
    way a single residue is (:func:`residue_weights`).
    """
    if rule not in WINDOW_RULES:
        raise InputError(f"unknown window rule '{rule}' (choose from {', '.join(WINDOW_RULES)})")
    fitting = [sp for sp in spans if sp[0] <= min(positions) and max(positions) < sp[1]]
    if not fitting:
        return []
    raw = np.array([edge_distance(sp, length)[np.asarray(positions) - sp[0]].min() for sp in fitting])
    if rule == "uniform":
        raw = np.ones(len(fitting))
    elif rule == "most-central":
        raw = (np.arange(len(fitting)) == int(np.argmax(raw))).astype(np.float64)
    return list(zip(fitting, (raw / raw.sum()).tolist()))
