"""Quantised tables: exact totals, every symbol representable, and close to the float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmzip import engine
from lmzip.quantize import frequencies, interval, intervals, lookup, lookups, probabilities


@pytest.mark.parametrize("vocab,precision", [(49152, 24), (49152, 30), (262144, 30), (300, 12), (3, 8)])
def test_total_and_minimum(vocab, precision):
    torch.manual_seed(0)
    logits = torch.randn(4, vocab) * torch.tensor([[0.1], [3.0], [30.0], [300.0]])
    f = frequencies(logits, precision)
    assert f.dtype == torch.int32
    assert torch.all(f.sum(-1, dtype=torch.int64) == 1 << precision)
    assert int(f.min()) >= 1


def test_cost_close_to_float_cross_entropy():
    """The ideal bits under the table are within 0.05% of the float cross-entropy."""
    torch.manual_seed(1)
    logits = torch.randn(64, 49152) * 4
    target = torch.distributions.Categorical(logits=logits).sample()[:, None]
    f = frequencies(logits, 30).gather(-1, target).double()
    ideal = float((30 - torch.log2(f)).sum())
    ce = float(-torch.log_softmax(logits.double(), -1).gather(-1, target).sum() / np.log(2))
    assert abs(ideal - ce) <= ce * 0.0005 + 1e-3


def test_same_logits_same_table_and_rejects_tiny_precision():
    logits = torch.randn(8, 1000)
    assert torch.equal(frequencies(logits.clone(), 20), frequencies(logits, 20))
    with pytest.raises(ValueError):
        frequencies(torch.zeros(1, 1000), 10)
    with pytest.raises(ValueError):
        frequencies(torch.zeros(1, 1000), 31)


@pytest.mark.parametrize("vocab", [49152, 1000, 3])
def test_interval_and_lookup_against_a_full_prefix_sum(vocab):
    """The two-level device lookups agree with numpy's cumulative sum, at every edge of every interval."""
    torch.manual_seed(vocab)
    f = frequencies(torch.randn(6, vocab) * 5, 30)
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


@pytest.mark.parametrize("vocab,precision,scale", [(49152, 30, 4.0), (262144, 30, 8.0), (32001, 30, 2.0), (1000, 20, 30.0), (3, 8, 1.0)])
def test_cpu_kernels_match_the_tensor_table(vocab, precision, scale):
    """``intervals`` and ``lookups`` on the CPU (numba, no table built) give exactly the table's numbers.

    32001 symbols at precision 30 make an odd budget that float32 cannot hold: both sides round it alike.
    """
    torch.manual_seed(vocab + precision)
    logits = torch.randn(6, vocab) * scale
    logits[5] = 0.0  # a tie everywhere: the remainder goes to the first symbol
    table = frequencies(logits, precision)
    tokens = torch.tensor([0, vocab - 1, vocab // 2, int(table[3].argmax()), 1 % vocab, vocab // 3])
    pairs = intervals(probabilities(logits), tokens, precision)
    assert torch.equal(pairs, interval(table, tokens))
    for pick in (lambda s, q: s, lambda s, q: s + q - 1, lambda s, q: s + q // 2):
        targets = torch.tensor([pick(int(s), int(q)) for s, q in pairs])
        assert torch.equal(lookups(probabilities(logits), targets, precision), lookup(table, targets))
    with pytest.raises(ValueError):
        intervals(probabilities(logits), tokens, 31)


@pytest.mark.parametrize("threads", [1, 2])
def test_probabilities_into_a_reused_buffer_are_bitwise_the_fresh_ones(threads):
    """The step loop writes every step's softmax into one buffer; no bit may differ from a fresh one,
    or files written before the buffer would no longer decode under the same engine revision."""
    torch.manual_seed(threads)
    buffer = None
    with engine.threads(threads):
        for scale in (0.1, 4.0, 300.0):
            logits = torch.randn(33, 49152) * scale
            out = probabilities(logits, out=buffer)
            assert buffer is None or out.data_ptr() == buffer.data_ptr()
            assert torch.equal(out.view(torch.int32), torch.softmax(logits, dim=-1).view(torch.int32))
            buffer = out
