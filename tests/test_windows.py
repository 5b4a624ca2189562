"""The one window rule: weights by hand for each rule, and the rule recorded with every embedding."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from protlens.errors import InputError
from protlens.pp import WINDOW_RULE, embed
from protlens.pp._windows import residue_weights, span_weights, stitch


def test_weights_by_hand():
    """10 residues, windows (0,6) and (4,10): residues 4 and 5 are covered twice."""
    spans = [(0, 6), (4, 10)]
    uni = residue_weights(spans, 10, "uniform")
    np.testing.assert_allclose(uni[0], [1, 1, 1, 1, 0.5, 0.5])
    # distance + 1 to the artificial end: residue 4 is 2 from (0,6)'s cut and 1 from (4,10)'s start
    cw = residue_weights(spans, 10, "centre-weighted")
    np.testing.assert_allclose(cw[0][4:], [2 / 3, 1 / 3])
    np.testing.assert_allclose(cw[1][:2], [1 / 3, 2 / 3])
    mc = residue_weights(spans, 10, "most-central")
    np.testing.assert_array_equal(mc[0], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(mc[1], [0, 1, 1, 1, 1, 1])
    assert span_weights(spans, [4, 5], 10, "most-central") == [((0, 6), 1.0), ((4, 10), 0.0)]
    assert span_weights(spans, [4, 5], 10, "uniform") == [((0, 6), 0.5), ((4, 10), 0.5)]
    with pytest.raises(InputError, match="unknown window rule"):
        residue_weights(spans, 10, "median")


def test_stitch_uniform_is_the_mean_where_windows_overlap():
    a, b = np.arange(6.0)[:, None], 10 + np.arange(6.0)[:, None]
    got = stitch([(0, 6), (4, 10)], [a, b], 10, "uniform")[:, 0]
    np.testing.assert_allclose(got, [0, 1, 2, 3, (4 + 10) / 2, (5 + 11) / 2, 12, 13, 14, 15])


def test_rule_recorded_in_uns(tiny_esm):
    adata = ad.AnnData(obs=pd.DataFrame({"sequence": ["MKTAYIAKQR" * 5]}, index=["p"]))
    embed(adata, tiny_esm, window=20, overlap=8, progress=False)
    assert adata.uns["embed"]["window_rule"] == WINDOW_RULE == "uniform"
    assert adata.uns["embed"]["n_windowed"] == 1
