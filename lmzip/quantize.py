"""Next-token probabilities to integer frequencies: the table the coder spends bits against.

Every symbol gets at least 1, the table sums to exactly ``2**precision``, and the result is a
pure function of the logits computed on their own device: the encoder and the decoder call
this same function on bit-identical logits, so they get bit-identical tables. Only the
softmax and the scaling are floating point; everything after is exact integer arithmetic.
"""

from __future__ import annotations

import torch

DEFAULT_PRECISION = 32


def frequencies(logits: torch.Tensor, precision: int = DEFAULT_PRECISION) -> torch.Tensor:
    """Quantise rows of logits ``(B, V)`` to int64 frequencies ``(B, V)``, each >= 1, summing to 2**precision.

    Each symbol gets ``1 + floor(p * budget)``. The budget leaves ``V`` for those ones plus a
    reserve of 2^-16 of the total, which covers any float32 rounding in ``sum(p)`` (it is off
    from 1 by a few ulp), so the remainder is never negative. The remainder goes to the most
    likely symbol, where it costs the least: under 2^-15 of a bit a token.
    """
    total = 1 << precision
    vocab = logits.shape[-1]
    budget = total - vocab - (total >> 16)
    if budget < vocab:
        raise ValueError(f"precision {precision} is too low for a vocabulary of {vocab}")
    probs = torch.softmax(logits.float(), dim=-1)
    freqs = torch.floor(probs * float(budget)).to(torch.int64) + 1
    remainder = total - freqs.sum(dim=-1, keepdim=True)
    freqs.scatter_add_(-1, freqs.argmax(dim=-1, keepdim=True), remainder)
    return freqs
