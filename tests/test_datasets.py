"""Synthetic families: hierarchy, motif tracking through indels, determinism, substitution model."""

import numpy as np
import pytest

from protlens.datasets import blosum62_model, motif_mask, synthetic_families
from protlens.errors import InputError


@pytest.fixture(scope="module")
def fams():
    return synthetic_families(random_state=0)


def test_shape_and_hierarchy(fams):
    assert fams.n_obs == 3 * 3 * 2 * 6
    obs = fams.obs
    assert obs["superfamily"].nunique() == 3
    assert obs["family"].nunique() == 9
    assert obs["subfamily"].nunique() == 18
    # Names are nested: every subfamily sits in exactly one family and superfamily.
    assert (obs.groupby("subfamily")["family"].nunique() == 1).all()
    assert all(f.startswith(s + ".") for s, f in zip(obs["superfamily"], obs["family"]))
    assert (obs["length"] == obs["sequence"].str.len()).all()
    assert set("".join(obs["sequence"])) <= set("ACDEFGHIKLMNPQRSTVWY")
    assert obs.index.is_unique


def test_indels_change_lengths_but_motifs_stay_intact(fams):
    assert fams.obs["length"].nunique() > 1  # indels happened
    motifs = fams.uns["synthetic"]["motifs"]
    for seq, fam, mask in zip(fams.obs["sequence"], fams.obs["family"], motif_mask(fams)):
        planted = "".join(c for c, m in zip(seq, mask) if m)
        assert planted == "".join(motifs[fam])  # same residues, same order, in every member


def test_deterministic_per_seed():
    a, b = synthetic_families(random_state=3), synthetic_families(random_state=3)
    c = synthetic_families(random_state=4)
    assert a.obs["sequence"].tolist() == b.obs["sequence"].tolist()
    assert a.obs["sequence"].tolist() != c.obs["sequence"].tolist()


def test_closer_relatives_are_more_identical(fams):
    """Hamming identity over the motif-free prefix is not usable with indels; use 3-mer overlap."""
    def kmers(s):
        return {s[i:i + 3] for i in range(len(s) - 2)}

    seqs = fams.obs["sequence"].tolist()
    obs = fams.obs
    same_sub, same_fam, other_sf = [], [], []
    for i in range(0, fams.n_obs, 5):
        for j in range(fams.n_obs):
            if i == j:
                continue
            jac = len(kmers(seqs[i]) & kmers(seqs[j])) / len(kmers(seqs[i]) | kmers(seqs[j]))
            if obs["subfamily"].iloc[i] == obs["subfamily"].iloc[j]:
                same_sub.append(jac)
            elif obs["family"].iloc[i] == obs["family"].iloc[j]:
                same_fam.append(jac)
            elif obs["superfamily"].iloc[i] != obs["superfamily"].iloc[j]:
                other_sf.append(jac)
    assert np.mean(same_sub) > np.mean(same_fam) > np.mean(other_sf)


def test_substitution_model_is_a_proper_reversible_process():
    p, evals, left, right = blosum62_model()
    assert p.min() > 0 and np.isclose(p.sum(), 1)
    P = left @ np.diag(np.exp(evals * 0.5)) @ right
    assert np.allclose(P.sum(axis=1), 1) and P.min() >= -1e-12
    assert np.allclose(p @ P, p)  # stationary
    assert np.allclose(p[:, None] * P, (p[:, None] * P).T)  # detailed balance
    Q = left @ np.diag(evals) @ right
    assert np.isclose(-(p * np.diag(Q)).sum(), 1)  # one substitution per site per unit time


def test_params_recorded_and_bad_params_rejected(fams):
    assert fams.uns["synthetic"]["params"]["random_state"] == 0
    with pytest.raises(InputError, match="n_superfamilies"):
        synthetic_families(n_superfamilies=0)
    with pytest.raises(InputError, match="too short"):
        synthetic_families(length=20, motifs_per_family=3, motif_length=8)


def test_motif_mask_needs_the_column():
    import anndata as ad

    with pytest.raises(InputError, match="motif_positions"):
        motif_mask(ad.AnnData(np.zeros((3, 1))))
