"""Classic protein-kinase-domain motifs, located per sequence, and importance enrichment at them.

Motifs are searched in order, each in a window after the previous one (so a ``DFG`` in the
N-lobe is never taken for the activation-loop one): the glycine-rich loop ``GxGxxG``, the ``VAIK``
lysine (``A.K``: ``VAIK``, ``VAVK``, ``YAMK``...), the catalytic-loop ``HRD``, ``DFG`` and ``APE``.
Each motif is tried with a strict pattern, then relaxed ones; what is still missing is transferred
by a Smith-Waterman alignment (BLOSUM62, parasail) to the best-scoring of a few sequences in which
all five were found strictly. Every hit records how it was found, so atypical kinases stay visible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: name, patterns (strict first), anchor motif, window of the match start relative to the anchor's start
#: (residues; for the first motif, fractions of the length).
KINASE_MOTIFS: tuple[tuple[str, tuple[str, ...], str | None, tuple[float, float]], ...] = (
    ("gly_loop", (r"G.G..G", r"G.[GA]..[GAS]", r"[GA].G..G"), None, (0.0, 0.3)),
    ("VAIK", (r"[VIL]A.K", r"A.K", r"[VILMFY][AVG].K"), "gly_loop", (8, 40)),
    ("HRD", (r"H[RC]D", r"[HYF].D(?=.{4}N)", r"H.D"), "VAIK", (50, 170)),
    ("DFG", (r"DFG", r"D[LYWMV]G", r"D.G"), "HRD", (8, 40)),
    ("APE", (r"APE", r"[SPTG]PE", r"A.E"), "DFG", (12, 50)),
)


@dataclass
class MotifHit:
    """One located motif: 0-based ``start``, matched residues, and how it was found."""

    motif: str
    start: int
    match: str
    how: str  # "pattern:<regex>" or "aligned:<reference id>"


def _search(seq: str, patterns: Sequence[str], lo: int, hi: int) -> tuple[int, str, str] | None:
    for p in patterns:
        for m in re.finditer(f"(?=({p}))", seq):
            if lo <= m.start() <= hi:
                return m.start(), m.group(1), f"pattern:{p}"
    return None


def find_motifs_by_pattern(seq: str, motifs=KINASE_MOTIFS, strict_only: bool = False) -> dict[str, MotifHit]:
    """Ordered pattern search; a motif whose anchor is missing is searched over the whole sequence."""
    hits: dict[str, MotifHit] = {}
    for name, pats, anchor, (a, b) in motifs:
        pats = pats[:1] if strict_only else pats
        if anchor is None:
            lo, hi = int(a * len(seq)), int(b * len(seq))
        elif anchor in hits:
            lo, hi = hits[anchor].start + int(a), hits[anchor].start + int(b)
        else:
            lo, hi = 0, len(seq)
        found = _search(seq, pats, lo, hi)
        if found:
            hits[name] = MotifHit(name, *found)
    return hits


def _aligned_map(query: str, ref: str) -> tuple[int, dict[int, int]]:
    """SW alignment score and a map from reference positions to query positions."""
    import parasail

    r = parasail.sw_trace_striped_16(query, ref, 10, 1, parasail.blosum62)
    tb = r.traceback
    qi, ri = r.cigar.beg_query, r.cigar.beg_ref
    mapping = {}
    for qc, rc in zip(tb.query, tb.ref):
        if qc != "-" and rc != "-":
            mapping[ri] = qi
        qi += qc != "-"
        ri += rc != "-"
    return r.score, mapping


def locate_kinase_motifs(ids: Sequence[str], seqs: Sequence[str], n_references: int = 8, min_score: int = 100,
                         motifs=KINASE_MOTIFS) -> pd.DataFrame:
    """One row per (protein, motif): ``id, motif, start, end, match, how`` (missing motifs: ``start`` -1).

    Alignment transfers need a Smith-Waterman score of at least ``min_score`` (BLOSUM62, gaps 10/1).
    """
    names = [m[0] for m in motifs]
    strict = [find_motifs_by_pattern(s, motifs, strict_only=True) for s in seqs]
    full = [i for i, h in enumerate(strict) if len(h) == len(names)]
    refs = [full[j] for j in np.linspace(0, len(full) - 1, min(n_references, len(full))).astype(int)] if full else []
    rows = []
    for i, (rid, s) in enumerate(zip(ids, seqs)):
        hits = strict[i] if i in refs else find_motifs_by_pattern(s, motifs)
        missing = [n for n in names if n not in hits]
        if missing and refs:
            score, mapping, ref = max(((*_aligned_map(s, seqs[r]), r) for r in refs if r != i), key=lambda t: t[0])
            for n in missing if score >= min_score else ():
                rh = strict[ref][n]
                pos = [mapping.get(rh.start + k) for k in range(len(rh.match))]
                if all(p is not None for p in pos) and pos == list(range(pos[0], pos[0] + len(pos))):
                    hits[n] = MotifHit(n, pos[0], s[pos[0] : pos[0] + len(pos)], f"aligned:{ids[ref]} (SW score {score})")
        for n in names:
            h = hits.get(n)
            rows.append({"id": rid, "motif": n, "start": h.start if h else -1,
                         "end": h.start + len(h.match) if h else -1, "match": h.match if h else "",
                         "how": h.how if h else "not found"})
    return pd.DataFrame(rows)


def motif_masks(table: pd.DataFrame, ids: Sequence[str], lengths: Sequence[int]) -> list[np.ndarray]:
    """Boolean residue masks (True inside any located motif) in the order of ``ids``."""
    masks = {rid: np.zeros(n, dtype=bool) for rid, n in zip(ids, lengths)}
    for row in table.itertuples():
        if row.start >= 0 and row.id in masks:
            masks[row.id][row.start : row.end] = True
    return [masks[rid] for rid in ids]


def motif_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per motif: how many proteins had it by strict pattern, relaxed pattern, alignment, or not at all."""
    strict = {m[0]: f"pattern:{m[1][0]}" for m in KINASE_MOTIFS}
    kind = np.where(table["how"] == table["motif"].map(strict), "strict",
                    np.where(table["how"].str.startswith("pattern:"), "relaxed",
                             np.where(table["how"].str.startswith("aligned:"), "aligned", "not_found")))
    out = pd.crosstab(table["motif"], kind)
    return out.reindex(index=[m[0] for m in KINASE_MOTIFS], columns=["strict", "relaxed", "aligned", "not_found"],
                       fill_value=0)


def enrichment(tracks: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_permutations: int = 1000,
               random_state: int = 0) -> dict[str, float]:
    """Mean importance at motif residues over the protein's mean importance, averaged over proteins.

    p-value: the masks are rotated by an independent random circular shift per protein, which keeps
    motif spacing and the tracks' own smoothness (a plain shuffle would ignore the latter and give
    anticonservative p-values); ``p = (1 + #null >= observed) / (1 + n_permutations)``.
    """
    pairs = [(np.asarray(t, float), np.asarray(m, bool)) for t, m in zip(tracks, masks) if m.any() and (~m).any()]
    if not pairs:
        return {"enrichment": float("nan"), "p_value": float("nan"), "n_proteins": 0}
    norm = [(t / t.mean() if t.mean() > 0 else t, m) for t, m in pairs]
    observed = float(np.mean([t[m].mean() for t, m in norm]))
    rng = np.random.default_rng(random_state)
    null = np.empty(n_permutations)
    for b in range(n_permutations):
        null[b] = np.mean([t[np.roll(m, rng.integers(1, len(m)))].mean() for t, m in norm])
    return {"enrichment": observed, "null_mean": float(null.mean()),
            "p_value": float((1 + np.sum(null >= observed)) / (1 + n_permutations)), "n_proteins": len(pairs)}
