"""Quantised tables: exact totals, every symbol representable, and close to the float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmzip.quantize import frequencies


@pytest.mark.parametrize("vocab,precision", [(49152, 24), (49152, 32), (262144, 32), (3, 8)])
def test_total_and_minimum(vocab, precision):
    torch.manual_seed(0)
    logits = torch.randn(4, vocab) * torch.tensor([[0.1], [3.0], [30.0], [300.0]])
    f = frequencies(logits, precision)
    assert f.dtype == torch.int64
    assert torch.all(f.sum(-1) == 1 << precision)
    assert int(f.min()) >= 1


def test_cost_close_to_float_cross_entropy():
    """The ideal bits under the table are within 0.05% of the float cross-entropy."""
    torch.manual_seed(1)
    logits = torch.randn(64, 49152) * 4
    target = torch.distributions.Categorical(logits=logits).sample()[:, None]
    f = frequencies(logits, 32).gather(-1, target).double()
    ideal = float((32 - torch.log2(f)).sum())
    ce = float(-torch.log_softmax(logits.double(), -1).gather(-1, target).sum() / np.log(2))
    assert abs(ideal - ce) <= ce * 0.0005 + 1e-3


def test_same_logits_same_table_and_rejects_tiny_precision():
    logits = torch.randn(8, 1000)
    assert torch.equal(frequencies(logits.clone(), 20), frequencies(logits, 20))
    with pytest.raises(ValueError):
        frequencies(torch.zeros(1, 1000), 10)
