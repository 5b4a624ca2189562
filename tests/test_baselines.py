"""Alignment similarity (parasail) and MMseqs2 clusters on hand-checkable and synthetic data."""

import shutil

import numpy as np
import parasail
import pytest
from sklearn.metrics import adjusted_rand_score

from protlens import baselines, tl
from protlens.datasets import synthetic_families
from protlens.errors import InputError


def test_alignment_matches_direct_smith_waterman():
    seqs = ["MKTAYIAKQR", "MKTAYIAKQW", "GGGGSGGGGS", "WWCCHHMMYY"]
    raw = baselines.alignment_similarity(seqs, normalize=False)
    for i in range(4):
        for j in range(4):
            assert raw[i, j] == parasail.sw_striped_16(seqs[i], seqs[j], 11, 1, parasail.blosum62).score
    S = baselines.alignment_similarity(seqs)
    assert np.allclose(np.diag(S), 1) and np.allclose(S, S.T)
    assert S[0, 1] == pytest.approx(raw[0, 1] / np.sqrt(raw[0, 0] * raw[1, 1]))
    assert S[0, 1] > S[0, 2]


def test_threads_give_the_same_matrix():
    seqs = synthetic_families(2, 2, 2, 7, length=60).obs["sequence"].tolist()
    assert np.array_equal(baselines.alignment_similarity(seqs, n_jobs=1), baselines.alignment_similarity(seqs, n_jobs=2))


def test_alignment_clusters_synthetic_families():
    a = synthetic_families(n_superfamilies=2, families_per_superfamily=2, members_per_subfamily=4, length=80)
    baselines.alignment(a)
    tl.cluster(a, "agglomerative", n_clusters=4, use_graph="alignment")
    assert adjusted_rand_score(a.obs["family"], a.obs["agglomerative"]) > 0.9


def test_bad_input():
    with pytest.raises(InputError, match="at least 3"):
        baselines.alignment_similarity(["MK", "MKT"])
    with pytest.raises(InputError, match="unknown substitution matrix"):
        baselines.alignment_similarity(["MK", "MKT", "MKV"], matrix="nope")
    with pytest.raises(InputError, match="not on PATH"):
        baselines.mmseqs_cluster(["MKT"] * 3, binary="no-such-mmseqs-binary")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmseqs") is None, reason="mmseqs2 binary not installed")
def test_mmseqs_easy_cluster_on_synthetic_families():
    a = synthetic_families(n_superfamilies=2, families_per_superfamily=2, members_per_subfamily=4, length=100)
    baselines.mmseqs(a, min_seq_id=0.5)
    assert a.uns["mmseqs"]["params"]["method"] == "mmseqs"
    table = tl.evaluate(a, "family", n_boot=0)  # found without being named
    assert "mmseqs" in table.index
    assert table.loc["mmseqs", "homogeneity"] > 0.9  # no cluster mixes families (~33% identity apart)
