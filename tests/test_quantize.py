"""Frequency tables from integer logits: exact totals, every symbol representable, close to the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmzip import intmodel
from lmzip.quantize import int_frequencies, interval, lookup

EXP = torch.from_numpy(intmodel._exp_table(30))


def _fixed_point(logits: torch.Tensor) -> torch.Tensor:
    """Float logits in nats as the engine's int64 fixed point (``2**-FS`` nats)."""
    return torch.round(logits.double() * (1 << intmodel.FS)).long()


def test_cost_close_to_the_cross_entropy():
    """The ideal bits under the tables are within 0.05% of the cross-entropy of the same logits."""
    torch.manual_seed(1)
    logits = _fixed_point(torch.randn(64, 49152) * 4)
    nats = logits.double() / (1 << intmodel.FS)
    target = torch.distributions.Categorical(logits=nats).sample()[:, None]
    f = int_frequencies(logits, EXP, 30)[0].gather(-1, target).double()
    ideal = float((30 - torch.log2(f)).sum())
    ce = float(-torch.log_softmax(nats, -1).gather(-1, target).sum() / np.log(2))
    assert abs(ideal - ce) <= ce * 0.0005 + 1e-3


def test_too_low_or_too_high_a_precision_is_refused():
    with pytest.raises(ValueError):
        int_frequencies(torch.zeros(1, 1000, dtype=torch.long), EXP, 10)
    with pytest.raises(ValueError):
        int_frequencies(torch.zeros(1, 1000, dtype=torch.long), EXP, 31)


@pytest.mark.parametrize("vocab", [49152, 1000, 3])
def test_interval_and_lookup_against_a_full_prefix_sum(vocab):
    """The two-level device lookups agree with numpy's cumulative sum, at every edge of every interval."""
    torch.manual_seed(vocab)
    f = int_frequencies(_fixed_point(torch.randn(6, vocab) * 5), EXP, 30)[0].int()
    cdf = np.cumsum(f.numpy().astype(np.int64), axis=1)
    tokens = torch.tensor([0, vocab - 1, vocab // 2, 1 % vocab, int(f[4].argmax()), vocab // 3])
    pairs = interval(f, tokens).numpy()
    for row, tok in enumerate(tokens.tolist()):
        assert pairs[row, 1] == f[row, tok]
        assert pairs[row, 0] == cdf[row, tok] - f[row, tok]
    for pick in (lambda s, q: s, lambda s, q: s + q - 1, lambda s, q: s + q // 2):
        targets = torch.tensor([pick(int(s), int(q)) for s, q in pairs])
        found = lookup(f, targets).numpy()
        assert np.array_equal(found[:, 0], tokens.numpy())
        assert np.array_equal(found[:, 1:], pairs)
