"""Next-token logits to integer frequencies, and the lookups the coder needs, on the model's device.

Every symbol gets at least 1, a table sums to exactly ``2**precision``, and the table is a pure
function of the logits computed on their own device: the encoder and the decoder call this same
function on bit-identical logits, so they get bit-identical tables. Only the softmax and the
scaling are floating point; everything after is exact integer arithmetic, so sums and prefix
sums do not depend on the order a kernel adds in. Every sum is at most ``2**30``, so all of it
runs in int32, with no int64 copy of a table.

Only what the coder needs leaves the device: the ``(start, freq)`` of the actual token when
encoding, and the symbol found for a target value when decoding. Both use a two-level prefix
sum (blocks of ``BLOCK`` symbols, then one block), which costs one pass over the vocabulary
instead of a full cumulative sum.
"""

from __future__ import annotations

import torch

DEFAULT_PRECISION = 30  # tables sum to 2^30: int32 holds every prefix sum
MAX_PRECISION = 30
BLOCK = 256


def frequencies(logits: torch.Tensor, precision: int = DEFAULT_PRECISION) -> torch.Tensor:
    """Quantise rows of logits ``(B, V)`` to int32 frequencies ``(B, V)``, each >= 1, summing to 2**precision.

    Each symbol gets ``1 + floor(p * budget)``. The budget leaves ``V`` for those ones plus a
    reserve of 2^-16 of the total, which covers any float32 rounding in ``sum(p)`` (it is off
    from 1 by a few ulp), so the remainder is never negative. The remainder goes to the most
    likely symbol, where it costs the least: under 2^-15 of a bit a token.
    """
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}")
    total = 1 << precision
    vocab = logits.shape[-1]
    budget = total - vocab - (total >> 16)
    if budget < vocab:
        raise ValueError(f"precision {precision} is too low for a vocabulary of {vocab}")
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.argmax(dim=-1, keepdim=True)
    freqs = probs.mul_(float(budget)).to(torch.int32).add_(1)  # truncation is floor: probs >= 0
    remainder = total - freqs.sum(dim=-1, keepdim=True, dtype=torch.int32)
    return freqs.scatter_add_(-1, top, remainder)


def _blocks(freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Freqs as ``(B, nblocks, BLOCK)`` (zero-padded) and the exclusive prefix sum of the block sums."""
    pad = -freqs.shape[-1] % BLOCK
    blocks = (torch.nn.functional.pad(freqs, (0, pad)) if pad else freqs).view(freqs.shape[0], -1, BLOCK)
    sums = blocks.sum(-1, dtype=torch.int32)
    return blocks, sums.cumsum(-1, dtype=torch.int32) - sums


def _pair(blocks: torch.Tensor, before: torch.Tensor, block: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` int64 ``(start, freq)`` of the symbols at ``block * BLOCK + offset``."""
    inner = blocks.gather(1, block[:, None, None].expand(-1, 1, BLOCK))[:, 0].to(torch.int64)
    freq = inner.gather(1, offset[:, None])[:, 0]
    below = inner.cumsum(-1).gather(1, offset[:, None])[:, 0] - freq
    return torch.stack([before.gather(1, block[:, None])[:, 0] + below, freq], dim=1)


def interval(freqs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` int64: each row's ``(start, freq)`` for its token, start = sum of freqs below it."""
    blocks, before = _blocks(freqs)
    return _pair(blocks, before, tokens // BLOCK, tokens % BLOCK)


def lookup(freqs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` int64: the symbol whose ``[start, start + freq)`` holds each row's target, then start and freq."""
    blocks, before = _blocks(freqs)
    block = (torch.searchsorted(before, targets[:, None].to(before.dtype), right=True)[:, 0] - 1).clamp_(0, blocks.shape[1] - 1)
    inner = blocks.gather(1, block[:, None, None].expand(-1, 1, BLOCK))[:, 0].to(torch.int64)
    rest = (targets - before.gather(1, block[:, None])[:, 0])[:, None]
    offset = torch.searchsorted(inner.cumsum(-1), rest, right=True)[:, 0].clamp_(max=BLOCK - 1)
    return torch.cat([(block * BLOCK + offset)[:, None], _pair(blocks, before, block, offset)], dim=1)
