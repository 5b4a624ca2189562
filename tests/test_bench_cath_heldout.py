"""Hit@k on an arbitrary labelled set (the held-out CATH test of the model card), by hand and against SCOP's masks."""

from __future__ import annotations

import numpy as np
import pytest

from protlens.bench._common import cosine_matrix
from protlens.bench.homology import hit_at_k, labelled_hit_at_k

# Six domains in 2-D (angles 0, 6.3, 36.9, 90, 84.3, 180 degrees), CATH superfamily and topology.
X = np.array([[1, 0], [0.9, 0.1], [0.8, 0.6], [0, 1], [0.1, 1], [-1, 0]])
SF = np.array(["cath:1.10.8.10", "cath:1.10.8.20", "cath:1.10.8.10", "cath:2.60.40.10", "cath:2.60.40.10",
               "cath:3.40.50.300"])
TOPO = np.array([s.rsplit(".", 1)[0] for s in SF])


def test_superfamily_level_by_hand():
    # query 0 ranks 1 before its positive 2, query 2 ranks 1 before 0: both miss at 1 and hit at 2;
    # 3 and 4 find each other first; 1 and 5 have no positive and are skipped
    hits, n = labelled_hit_at_k(X, SF, ks=(1, 2, 5))
    assert n == 4
    assert hits == {1: 0.5, 2: 1.0, 5: 1.0}


def test_topology_level_leaves_out_the_same_superfamily():
    # positives share C.A.T but not C.A.T.H: 0 <-> 1 and 2 <-> 1 (1 is nearest to both) and 1 <-> {0, 2};
    # 3 and 4 share their superfamily, so they have no positive once it is excluded
    hits, n = labelled_hit_at_k(X, TOPO, exclude=SF, ks=(1,))
    assert n == 3 and hits == {1: 1.0}
    _, n_all = labelled_hit_at_k(X, TOPO, ks=(1,))
    assert n_all == 5


def test_cosine_ignores_vector_length():
    scaled = X * np.array([3.0, 0.5, 7.0, 1.0, 2.0, 0.1])[:, None]
    assert labelled_hit_at_k(scaled, SF, ks=(1, 2)) == labelled_hit_at_k(X, SF, ks=(1, 2))


def test_matches_scop_masks_on_random_hierarchy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    fam = rng.integers(0, 20, size=60)
    sf = fam // 3  # families nest in superfamilies
    same_fam, same_sf = fam[:, None] == fam[None], sf[:, None] == sf[None]
    expected = hit_at_k(cosine_matrix(x), same_sf & ~same_fam, same_fam)
    assert labelled_hit_at_k(x, sf, exclude=fam) == expected
    assert expected[1] > 0


def test_no_query_with_a_positive_gives_nan():
    hits, n = labelled_hit_at_k(X[:3], np.array(["a", "b", "c"]), ks=(1,))
    assert n == 0 and np.isnan(hits[1])


@pytest.mark.parametrize("ks", [(1,), (1, 5, 10)])
def test_rates_are_monotone_in_k(ks):
    rng = np.random.default_rng(1)
    hits, _ = labelled_hit_at_k(rng.normal(size=(40, 4)), rng.integers(0, 6, size=40), ks=ks)
    vals = [hits[k] for k in ks]
    assert vals == sorted(vals) and all(0 <= v <= 1 for v in vals)
