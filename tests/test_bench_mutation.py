"""Zero-shot mutation scoring, checked against a straightforward re-implementation on the HF model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from protlens.bench._common import BenchModel
from protlens.bench.mutation import (blosum62_scores, scoring_windows, load_assay, parse_mutant, score_variants,
                                     spearman)
from protlens.errors import InputError

WT = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
AA = "ACDEFGHIKLMNPQRSTVWY"
TOK = {a: i for i, a in enumerate(["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>",
                                     "<mask>"])}


def hf_log_probs(hf, seq: str, masked: list[int]) -> torch.Tensor:
    """log p over the vocabulary at every residue of ``seq`` (0-based), with ``masked`` positions masked."""
    ids = [TOK["<cls>"]] + [TOK["<mask>"] if i in masked else TOK[a] for i, a in enumerate(seq)] + [TOK["<eos>"]]
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    return torch.log_softmax(logits[0, 1:-1], dim=-1)


def reference_masked_marginal(hf, wt: str, mutant: str) -> float:
    """Eq. 14 written out directly: mask every mutated position, sum log p(mt) - log p(wt)."""
    muts = [(int(m[1:-1]) - 1, m[0], m[-1]) for m in mutant.split(":")]
    lp = hf_log_probs(hf, wt, [p for p, _, _ in muts])
    return float(sum(lp[p, TOK[b]] - lp[p, TOK[a]] for p, a, b in muts))


def reference_wt_marginal(hf, wt: str, mutant: str) -> float:
    lp = hf_log_probs(hf, wt, [])
    return float(sum(lp[int(m[1:-1]) - 1, TOK[m[-1]]] - lp[int(m[1:-1]) - 1, TOK[m[0]]] for m in mutant.split(":")))


def reference_pll(hf, seq: str) -> float:
    return float(sum(hf_log_probs(hf, seq, [i])[i, TOK[a]] for i, a in enumerate(seq)))


MUTANTS = ["M1A", "K2R", "A4W:Y5F", "Q33P", "I6L:A7G:K8E", "G28C"]


@pytest.mark.parametrize("strategy,reference", [("masked-marginals", reference_masked_marginal),
                                                ("wt-marginals", reference_wt_marginal)])
def test_scorer_matches_reimplementation(tiny_esm, strategy, reference):
    variants = [parse_mutant(m, WT) for m in MUTANTS]
    got = score_variants(BenchModel("tiny", tiny_esm), WT, variants, strategy)
    want = np.array([reference(tiny_esm.hf, WT, m) for m in MUTANTS])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(got) > 0  # a random model still gives different scores to different variants


def test_pseudo_likelihood_matches_reimplementation(tiny_esm):
    wt = WT[:8]
    muts = ["K2R", "A4W:Y5F"]
    got = score_variants(BenchModel("tiny", tiny_esm), wt, [parse_mutant(m, wt) for m in muts], "pseudo-likelihood")
    want = []
    for m in muts:
        s = list(wt)
        for part in m.split(":"):
            s[int(part[1:-1]) - 1] = part[-1]
        want.append(reference_pll(tiny_esm.hf, "".join(s)) - reference_pll(tiny_esm.hf, wt))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_long_protein_scored_in_every_tiling_window_that_holds_the_mutations(tiny_esm):
    """Windows of 24 overlapping by 12 over 70 residues: (0,24) (12,36) (24,48) (36,60) (46,70); a
    variant's score is the mean over the windows holding all its mutations (the uniform window rule)."""
    rng = np.random.default_rng(0)
    wt = "".join(rng.choice(list(AA), size=70))
    window = 24
    muts = [f"{wt[60]}61A", f"{wt[3]}4C:{wt[5]}6D", f"{wt[35]}36W", f"{wt[22]}23W:{wt[25]}26C"]
    expected = [[(46, 70)], [(0, 24)], [(12, 36), (24, 48)], [(12, 36)]]
    variants = [parse_mutant(m, wt) for m in muts]
    got = score_variants(BenchModel("tiny", tiny_esm), wt, variants, "masked-marginals", window=window)
    for m, spans, g in zip(muts, expected, got):
        want = []
        for s, e in spans:
            shifted = ":".join(f"{part[0]}{int(part[1:-1]) - s}{part[-1]}" for part in m.split(":"))
            want.append(reference_masked_marginal(tiny_esm.hf, wt[s:e], shifted))
        assert g == pytest.approx(np.mean(want), abs=1e-4)
    # mutations further apart than the window cannot be scored together
    wide = parse_mutant(f"{wt[0]}1A:{wt[69]}70C", wt)
    assert np.isnan(score_variants(BenchModel("tiny", tiny_esm), wt, [wide], window=window)[0])


def test_scoring_windows_short_tiled_and_centred_fallback():
    assert scoring_windows([5], 50, 100) == [((0, 50), 1.0)]
    # tiling of 40 over 100 residues: (0, 40) (20, 60) (40, 80) (60, 100)
    assert scoring_windows([30], 100, 40) == [((0, 40), 0.5), ((20, 60), 0.5)]
    assert scoring_windows([38, 41], 100, 40) == [((20, 60), 1.0)]
    # 19..40 fill a window of 22 exactly, and no tiling window (starts 0, 11, 22, ...) holds them
    assert scoring_windows([19, 40], 100, 22) == [((19, 41), 1.0)]
    assert scoring_windows([10, 60], 100, 40) == []


def test_blosum62_baseline_values():
    # W-W 11, C-C 9, A-R -1, summed over a double mutant
    v = [[(0, "W", "W")], [(0, "C", "C")], [(0, "A", "R")], [(0, "A", "R"), (1, "W", "W")]]
    np.testing.assert_array_equal(blosum62_scores(v), [11, 9, -1, 10])


def test_parse_mutant_rejects_wrong_wild_type():
    assert parse_mutant("K2R:M1A", WT) == [(0, "M", "A"), (1, "K", "R")]
    with pytest.raises(ValueError, match="wild type has K at 2"):
        parse_mutant("A2R", WT)
    with pytest.raises(ValueError, match="outside"):
        parse_mutant("A99R", WT)


def test_load_assay_reports_and_skips_bad_rows(tmp_path):
    csv = tmp_path / "assay.csv"
    pd.DataFrame({"mutant": ["M1A", "A2R", "K2R", "garbage", "Y5F"], "score": [0.1, 0.2, 0.3, 0.4, None]}).to_csv(
        csv, index=False)
    assay = load_assay(csv, WT, "toy")
    assert assay.mutants == ["M1A", "K2R"]
    assert assay.skipped["line"].tolist() == [3, 5, 6]
    assert "wild type has K at 2, mutant says A" in assay.skipped["reason"].iloc[0]
    with pytest.raises(InputError, match="no column 'fitness'"):
        load_assay(csv, WT, score_col="fitness")


def test_spearman_ignores_unscored_and_constant():
    y = np.arange(6.0)
    assert spearman(np.array([0, 1, 2, np.nan, 4, 5.0]), y) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(6), y))


@pytest.mark.shared_data
def test_blosum62_correlates_with_tem1_fitness(shared_data):
    """Sign check of assay loading: substitution-matrix scores rank TEM-1 variants above chance."""
    from protlens.io import iter_fasta

    wt = next(iter(iter_fasta(shared_data / "dms" / "BLAT_ECOLX_Stiffler_2015.fasta")))[1]
    assay = load_assay(shared_data / "dms" / "BLAT_ECOLX_Stiffler_2015.csv", wt)
    assert len(assay.variants) > 4000 and assay.skipped.empty
    assert spearman(blosum62_scores(assay.variants), assay.fitness) > 0.15
