"""Zero-shot mutation effects (ComproESM appendix E, eq. 14; Meier et al. 2021): Spearman per assay.

Scores, higher = predicted fitter:

* ``masked-marginals`` (eq. 14): all mutated positions masked together, sum over them of
  log p(mutant) - log p(wild type);
* ``wt-marginals``: the same log-odds read from one unmasked pass over the wild type;
* ``pseudo-likelihood``: PLL(mutant) - PLL(wild type), each PLL summing log p(x_i | x without i)
  over every position of the scored window (one forward per position and variant: slow).

A left-to-right model (UniRep) is scored instead by its log-likelihood ratio
log p(mutant) - log p(wild type), each the sum over residues of log p(x_i | x_1..x_{i-1}) from its
next-residue head, whole sequences (:func:`autoregressive_scores`).


Proteins longer than the model's window are scored in the windows of a fixed tiling of the protein
(windows overlapping by half, so that variants share forward passes) that hold all of a variant's
mutations, combined under protlens' one window rule (``protlens.pp.WINDOW_RULE``: the mean over
those windows); a multi-mutant that no tiling window holds is scored in a window centred on it.
A row whose stated wild-type residue disagrees with the wild-type sequence (or that cannot be
parsed, or lies outside the protein) is reported in ``DIR/mutation_skipped.tsv`` and skipped.

Data: ProteinGym single-substitution assays (``dms/<DMS_id>.csv`` + ``.fasta``, from
https://proteingym.org) and the TEM-1 scan of the ESM variant-prediction example
(``dms/esm_example/BLAT_ECOLX_Ranganathan2015.csv``, column ``2500``, from facebookresearch/esm).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..errors import InputError
from ..io import iter_fasta
from ..models import ESM_ALPHABET
from ..pp._windows import scoring_spans, span_weights
from ._common import BenchModel, Context, Row, sample_at_most, skipped

TASK = "mutation"
STRATEGIES = ("masked-marginals", "wt-marginals", "pseudo-likelihood")
_MUT = re.compile(r"^([A-Z])(\d+)([A-Z])$")
#: NCBI BLOSUM62 in parasail's residue order.
_BLOSUM_ORDER = "ARNDCQEGHILKMFPSTWYVBZX*"

Mutation = tuple[int, str, str]  # (0-based position, wild type, mutant)


@dataclass
class Assay:
    """One deep mutational scan: wild type, parsed variants and their measured fitness."""

    name: str
    wt: str
    variants: list[list[Mutation]]
    mutants: list[str]
    fitness: np.ndarray
    skipped: pd.DataFrame


def parse_mutant(text: str, wt: str, offset: int = 1) -> list[Mutation]:
    """``'A24C:T25G'`` -> [(23, 'A', 'C'), (24, 'T', 'G')]; raises ValueError naming the problem."""
    muts = []
    for part in str(text).strip().split(":"):
        m = _MUT.match(part.strip())
        if not m:
            raise ValueError(f"cannot parse '{part}' (expected e.g. A24C)")
        pos = int(m.group(2)) - offset
        if not 0 <= pos < len(wt):
            raise ValueError(f"position {m.group(2)} is outside the {len(wt)}-residue wild type")
        if wt[pos] != m.group(1):
            raise ValueError(f"wild type has {wt[pos]} at {m.group(2)}, mutant says {m.group(1)}")
        muts.append((pos, m.group(1), m.group(3)))
    if len({p for p, _, _ in muts}) != len(muts):
        raise ValueError("the same position is mutated twice")
    return sorted(muts)


def load_assay(csv: Path, wt: str, name: str | None = None, mutant_col: str = "mutant",
               score_col: str = "score", offset: int = 1) -> Assay:
    """Read and validate an assay; bad rows are collected (row number, mutant, reason), not fatal."""
    df = pd.read_csv(csv)
    for col in (mutant_col, score_col):
        if col not in df.columns:
            raise InputError(f"{csv}: no column '{col}' (columns: {', '.join(map(str, df.columns))})")
    variants, mutants, fitness, bad = [], [], [], []
    for row, (mut, y) in enumerate(zip(df[mutant_col], df[score_col]), start=2):  # line in the file
        try:
            if pd.isna(y):
                raise ValueError("no fitness value")
            variants.append(parse_mutant(mut, wt, offset))
        except ValueError as e:
            bad.append((name or csv.stem, row, mut, str(e)))
            continue
        mutants.append(str(mut))
        fitness.append(float(y))
    skipped_rows = pd.DataFrame(bad, columns=["assay", "line", "mutant", "reason"])
    return Assay(name or csv.stem, wt, variants, mutants, np.asarray(fitness), skipped_rows)


def scoring_windows(positions: list[int], length: int, window: int) -> list[tuple[tuple[int, int], float]]:
    """The residue spans [start, end) these positions are scored in, with their weights (summing to
    1); empty if they span more than ``window``."""
    if length <= window:
        return [((0, length), 1.0)]
    lo, hi = min(positions), max(positions)
    if hi - lo + 1 > window:
        return []
    fitting = span_weights(scoring_spans(length, window), positions, length)
    if fitting:
        return fitting
    start = min(max(lo - (window - (hi - lo + 1)) // 2, 0), length - window)  # centred on them
    return [((start, start + window), 1.0)]


def _tokens(seq: str) -> np.ndarray:
    return ESM_ALPHABET.batch([seq])[0][0]


def _tok(aa: str) -> int:
    return ESM_ALPHABET.tok_to_idx[aa]


def score_variants(model: BenchModel, wt: str, variants: list[list[Mutation]],
                   strategy: str = "masked-marginals", window: int | None = None) -> np.ndarray:
    """Zero-shot score of each variant (NaN where its mutations span more than the window)."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown scoring '{strategy}' (choose from {', '.join(STRATEGIES)})")
    members = getattr(model.model, "members", None)
    if members is not None:  # an ensemble (ESM-1v): the mean of its members' scores
        return np.mean([score_variants(BenchModel(model.name, m, model.max_tokens, model.device), wt, variants,
                                       strategy, window) for m in members], axis=0)
    W = window or model.model.max_residues
    scores = np.full(len(variants), np.nan)
    if strategy == "wt-marginals":
        # one unmasked pass per window; each position read from its windows under the window rule
        pos_win = {p: scoring_windows([p], len(wt), W) for v in variants for p, _, _ in v}
        spans = sorted({sp for wins in pos_win.values() for sp, _ in wins})
        lps = dict(zip(spans, model.log_probs([_tokens(wt[s:e]) for s, e in spans],
                                              [np.arange(e - s + 2) for s, e in spans])))
        for i, v in enumerate(variants):
            scores[i] = sum(w * (lps[(s, e)][p - s + 1, _tok(m)] - lps[(s, e)][p - s + 1, _tok(wt_aa)])
                            for p, wt_aa, m in v for (s, e), w in pos_win[p])
        return scores
    if strategy == "masked-marginals":
        jobs: dict[tuple, int] = {}
        keys = []
        for v in variants:
            pos = tuple(p for p, _, _ in v)
            wins = scoring_windows(list(pos), len(wt), W)
            for span, _ in wins:
                jobs.setdefault((span, pos), len(jobs))
            keys.append([(jobs[(span, pos)], w) for span, w in wins])
        rows, where = [], []
        for (s, e), pos in jobs:
            t = _tokens(wt[s:e])
            idx = np.array(pos) - s + 1
            t[idx] = ESM_ALPHABET.mask_idx
            rows.append(t)
            where.append(idx)
        lps = model.log_probs(rows, where)
        for i, (v, key) in enumerate(zip(variants, keys)):
            if key:
                scores[i] = sum(w * sum(lps[job][j, _tok(m)] - lps[job][j, _tok(wt_aa)]
                                        for j, (_, wt_aa, m) in enumerate(v)) for job, w in key)
        return scores
    # pseudo-likelihood
    for i, v in enumerate(variants):
        mut = list(wt)
        for p, _, m in v:
            mut[p] = m
        mutant = "".join(mut)
        wins = scoring_windows([p for p, _, _ in v], len(wt), W)
        if wins:
            scores[i] = sum(w * (pseudo_log_likelihood(model, mutant[s:e]) - pseudo_log_likelihood(model, wt[s:e]))
                            for (s, e), w in wins)
    return scores


def autoregressive_scores(plm, wt: str, variants: list[list[Mutation]]) -> np.ndarray:
    """log p(mutant) - log p(wild type) under a left-to-right model (``plm.residue_log_probs``).

    Terms before the first mutated position are the same in both and are left out of the sum.
    """
    mutants = []
    for v in variants:
        seq = list(wt)
        for p, _, m in v:
            seq[p] = m
        mutants.append("".join(seq))
    wt_lp, *mut_lp = plm.residue_log_probs([wt, *mutants])
    return np.array([float((lp - wt_lp)[v[0][0] :].sum()) for lp, v in zip(mut_lp, variants)])


def pseudo_log_likelihood(model: BenchModel, seq: str) -> float:
    """sum_i log p(x_i | x with position i masked), one forward per position."""
    base = _tokens(seq)
    rows, where = [], []
    for i in range(len(seq)):
        t = base.copy()
        t[i + 1] = ESM_ALPHABET.mask_idx
        rows.append(t)
        where.append(np.array([i + 1]))
    lps = model.log_probs(rows, where)
    return float(sum(lp[0, base[i + 1]] for i, lp in enumerate(lps)))


def blosum62_scores(variants: list[list[Mutation]]) -> np.ndarray:
    """Sum of BLOSUM62(wild type, mutant) over the mutations: the substitution-matrix baseline."""
    import parasail

    mat = np.asarray(parasail.blosum62.matrix)
    idx = {a: i for i, a in enumerate(_BLOSUM_ORDER)}
    return np.array([sum(mat[idx[w], idx[m]] for _, w, m in v) for v in variants], dtype=float)


def spearman(pred: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(pred)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0:
        return float("nan")
    return float(spearmanr(pred[ok], y[ok]).statistic)


def list_assays(ctx: Context) -> list[Assay]:
    """Every ``dms/*.csv`` with its FASTA, plus the ESM example; whole assays unless ``--fast`` (or smoke)."""
    return ctx.memo(TASK, lambda: _list_assays(ctx))


def _list_assays(ctx: Context) -> list[Assay]:
    dms = ctx.data("dms")
    items = []
    for csv in sorted(dms.glob("*.csv")):
        fasta = csv.with_suffix(".fasta")
        if fasta.exists():
            items.append((csv, fasta, csv.stem, "score"))
    example = dms / "esm_example" / "BLAT_ECOLX_Ranganathan2015.csv"
    blat = dms / "BLAT_ECOLX_Stiffler_2015.fasta"
    if example.exists() and blat.exists():
        items.append((example, blat, "BLAT_ECOLX_Ranganathan2015 (esm example, col 2500)", "2500"))
    if ctx.smoke:
        items = [it for it in items if it[2] in ("KCNH2_HUMAN_Kozek_2020", "RL401_YEAST_Roscoe_2014")]
    assays = []
    for csv, fasta, name, col in items:
        wt = next(iter(iter_fasta(fasta)))[1].upper()
        assay = load_assay(csv, wt, name, score_col=col)
        assays.append(subsample_positions(assay, ctx) if ctx.fast or ctx.smoke else assay)
    return assays


def subsample_positions(assay: Assay, ctx: Context) -> Assay:
    """Keep the variants whose first mutated position is among ``mut_positions`` seeded positions."""
    firsts = sorted({v[0][0] for v in assay.variants})
    keep_pos = set(sample_at_most(firsts, ctx.sizes["mut_positions"], ctx.rng(TASK + assay.name)))
    keep = [i for i, v in enumerate(assay.variants) if v[0][0] in keep_pos]
    return Assay(assay.name, assay.wt, [assay.variants[i] for i in keep], [assay.mutants[i] for i in keep],
                 assay.fitness[keep], assay.skipped)


def _write_split(ctx: Context, assays: list[Assay]) -> None:
    ctx.write_split(TASK, pd.DataFrame([(a.name, m) for a in assays for m in a.mutants],
                                       columns=["assay", "mutant"]))
    skipped_rows = pd.concat([a.skipped for a in assays], ignore_index=True)
    skipped_rows.to_csv(ctx.out / "mutation_skipped.tsv", sep="\t", index=False)


def _rows(per_assay: dict[str, tuple[float, int]], assays: list[Assay], note: str) -> list[Row]:
    rows = [Row(TASK, f"spearman:{name}", rho, n) for name, (rho, n) in per_assay.items()]
    vals = [rho for rho, _ in per_assay.values() if np.isfinite(rho)]
    n_skip = int(sum(len(a.skipped) for a in assays))
    rows.append(Row(TASK, "spearman_mean", float(np.mean(vals)) if vals else float("nan"), len(vals), note))
    rows.append(Row(TASK, "rows_skipped", float(n_skip), n_skip, "see mutation_skipped.tsv"))
    return rows


def baselines(ctx: Context) -> dict[str, list[Row]]:
    """BLOSUM62 on the same variants (model-independent)."""
    assays = list_assays(ctx)
    _write_split(ctx, assays)
    per = {a.name: (spearman(blosum62_scores(a.variants), a.fitness), len(a.variants)) for a in assays}
    return {"blosum62": _rows(per, assays, f"sum of BLOSUM62(wt, mt); {scope(ctx)}")}


def run(ctx: Context, model: BenchModel) -> list[Row]:
    if getattr(model.model, "autoregressive", False):
        assays = list_assays(ctx)
        per = {}
        for a in assays:
            pred = autoregressive_scores(model.model, a.wt, a.variants)
            per[a.name] = (spearman(pred, a.fitness), len(pred))
        return _rows(per, assays, f"log-likelihood ratio, next-residue head (left-to-right model); "
                                  f"{ctx.sizes['mut_positions']} positions per assay")
    if not model.has_logits:
        return skipped(TASK, "model has no masked-LM logits")
    assays = list_assays(ctx)
    per = {}
    for a in assays:
        pred = score_variants(model, a.wt, a.variants, ctx.scoring)
        per[a.name] = (spearman(pred, a.fitness), int(np.isfinite(pred).sum()))
    return _rows(per, assays, f"{ctx.scoring}; {scope(ctx)}")


def scope(ctx: Context) -> str:
    """How much of each assay was scored (for the results table)."""
    if ctx.fast or ctx.smoke:
        return f"subsampled: {ctx.sizes['mut_positions']} seeded positions per assay (--fast)"
    return "full assays"
