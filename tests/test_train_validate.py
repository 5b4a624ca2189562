"""protlens.train.trainer.validate: settings refused before any data or model is touched."""

from __future__ import annotations

import pytest

from protlens.errors import InputError
from protlens.train.config import TrainConfig
from protlens.train.trainer import validate


@pytest.mark.parametrize("objective", ["graph", "mlm+graph"])
def test_fp16_refused_with_graph_objective(objective):
    # one GradScaler for two optimizers would unscale the delayed superfamily gradient twice
    with pytest.raises(InputError, match="fp16 is not supported with a graph objective"):
        validate(TrainConfig(data="corpus.tsv", objective=objective, precision="fp16", delay_k=4))


@pytest.mark.parametrize("precision", ["auto", "bf16", "no"])
def test_other_precisions_accepted_with_graph_objective(precision):
    assert validate(TrainConfig(data="corpus.tsv", objective="mlm+graph", precision=precision)) is None


def test_fp16_accepted_for_mlm():
    assert validate(TrainConfig(data="corpus.tsv", objective="mlm", precision="fp16")) is None
