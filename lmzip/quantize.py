"""Integer logits to frequency tables, and the lookups the coder needs, on the logits' device.

Every symbol gets at least 1, a table sums to exactly ``2**precision``, and every step from the
integer logits to the table is an integer operation, so every machine builds the same table
(see the section below for the rule).

Only what the coder needs leaves a table: the ``(start, freq)`` of the actual token when
encoding (``int_intervals``), and the symbol found for a target value when decoding
(``int_lookups``). On the CPU a numba kernel computes both straight from the logits, row by
row, without building the table. Elsewhere (CUDA) the table is built as a tensor and searched
with a two-level prefix sum (blocks of ``BLOCK`` symbols, then one block).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .kernels import floordiv

DEFAULT_PRECISION = 30  # tables sum to 2^30: int32 holds every prefix sum
MAX_PRECISION = 30
BLOCK = 256


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
    """``(B, 3)`` int64: the symbol whose ``[start, start + freq)`` holds each row's target, then start and freq.
    A target past the table (a damaged stream) finds the last symbol, as the CPU kernels do."""
    targets = torch.minimum(targets, freqs.sum(-1, dtype=torch.int64) - 1)
    blocks, before = _blocks(freqs)
    block = (torch.searchsorted(before, targets[:, None].to(before.dtype), right=True)[:, 0] - 1).clamp_(0, blocks.shape[1] - 1)
    inner = blocks.gather(1, block[:, None, None].expand(-1, 1, BLOCK))[:, 0].to(torch.int64)
    rest = (targets - before.gather(1, block[:, None])[:, 0])[:, None]
    offset = torch.searchsorted(inner.cumsum(-1), rest, right=True)[:, 0].clamp_(max=BLOCK - 1)
    return torch.cat([(block * BLOCK + offset)[:, None], _pair(blocks, before, block, offset)], dim=1)


# -- the table ---------------------------------------------------------------------------------
#
# The integer engine's logits are int64 fixed point in 2**-12 nats (``intmodel.FS``). A row's
# table is ``P[v] = E[min(max - logit[v], len(E) - 1)]``, with ``E`` the model's integer table of
# ``exp(-d)`` (1 = 2**30, falling to 0), then ``f[v] = 1 + floor(P[v] * (2**P - V) / sum(P))``,
# the remainder to the first most likely symbol. Every step is an integer operation, so every
# machine builds the same table; ``int_frequencies`` is the plain torch statement of it (and a
# device's path), and the numba kernels below give the same numbers on a CPU without building the table.


def int_budget(vocab: int, precision: int) -> tuple[int, int]:
    """``(total, budget)`` of an integer table: ``floor(P * budget / sum(P))`` sums to at most ``budget``."""
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}")
    total = 1 << precision
    if total - vocab < vocab:
        raise ValueError(f"precision {precision} is too low for a vocabulary of {vocab}")
    return total, total - vocab


def int_probabilities(logits: torch.Tensor, exp_table: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``P (N, V)`` on the logits' device, and its max logit ``(N, 1)``."""
    exp_table = torch.as_tensor(exp_table, device=logits.device)  # no copy when already there
    best = logits.amax(-1, keepdim=True)
    return exp_table[(best - logits).clamp_(max=exp_table.shape[0] - 1)], best


def int_frequencies(logits: torch.Tensor, exp_table: torch.Tensor | np.ndarray, precision: int = DEFAULT_PRECISION
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of integer logits ``(N, V)`` to int64 frequencies ``(N, V)``, each >= 1, summing to
    2**precision, on the logits' device; and each row's ``P (N, V)``. The plain statement of the
    table, and a device's way to it."""
    total, budget = int_budget(logits.shape[-1], precision)
    p, best = int_probabilities(logits, exp_table)
    freqs = 1 + torch.div(p * budget, p.sum(-1, keepdim=True), rounding_mode="floor")  # p * budget < 2**60
    symbols = torch.arange(logits.shape[-1], device=logits.device)
    top = torch.where(logits == best, symbols, logits.shape[-1]).amin(-1, keepdim=True)  # the first most likely
    return freqs.scatter_add_(-1, top, total - freqs.sum(-1, keepdim=True)), p


LOOKUP_BLOCK = 256  # a lookup skips whole blocks of symbols by their sums, then scans one


@numba.njit(cache=True, nogil=True)
def _int_row(row, exp_table, p):
    """The row's max, its first argmax and ``sum(P)``, with ``P`` written into ``p``. Three plain
    loops (the max, its first place, then ``P``), so that the first and the last vectorise."""
    best = row[0]
    for v in range(row.shape[0]):
        best = max(best, row[v])
    top = 0
    while row[top] != best:
        top += 1
    last, whole = exp_table.shape[0] - 1, 0
    for v in range(row.shape[0]):
        p[v] = exp_table[min(best - row[v], last)]
        whole += p[v]
    return best, top, whole


@numba.njit(cache=True, nogil=True, inline="always")
def _freq(p, budget, whole, inv):
    """A symbol's frequency before the remainder: ``1 + floor(P * budget / whole)``."""
    return 1 + floordiv(p * budget, whole, inv)


@numba.njit(cache=True, nogil=True)
def _freq_sum(p, budget, whole, inv):
    """The sum of the frequencies (``_freq``) of the symbols ``p`` holds."""
    s = 0
    for v in range(p.shape[0]):
        s += _freq(p[v], budget, whole, inv)
    return s


@numba.njit(cache=True, nogil=True, parallel=True)
def _int_intervals(logits, tokens, exp_table, budget, total, out):
    for r in numba.prange(logits.shape[0]):
        row, tok = logits[r], tokens[r]
        p = np.empty(row.shape[0], np.int64)
        best, top, whole = _int_row(row, exp_table, p)
        inv = 1.0 / np.float64(whole)
        below, rest = _freq_sum(p[:tok], budget, whole, inv), _freq_sum(p[tok + 1 :], budget, whole, inv)
        f_tok = _freq(p[tok], budget, whole, inv)
        extra = total - below - rest - f_tok
        out[r, 0] = below + (extra if top < tok else 0)
        out[r, 1] = f_tok + (extra if top == tok else 0)
        out[r, 2] = p[tok]
        out[r, 3] = whole


@numba.njit(cache=True, nogil=True, parallel=True)
def _int_lookups(logits, targets, exp_table, budget, total, out):
    for r in numba.prange(logits.shape[0]):
        row, target = logits[r], targets[r]
        p = np.empty(row.shape[0], np.int64)
        best, top, whole = _int_row(row, exp_table, p)
        inv = 1.0 / np.float64(whole)
        extra = total - _freq_sum(p, budget, whole, inv)
        start, v, last = 0, 0, row.shape[0] - 1
        while v + LOOKUP_BLOCK < row.shape[0]:  # whole blocks below the target, the last one scanned
            block = _freq_sum(p[v : v + LOOKUP_BLOCK], budget, whole, inv) + (extra if v <= top < v + LOOKUP_BLOCK else 0)
            if target < start + block:
                break
            start += block
            v += LOOKUP_BLOCK
        while True:  # a target past the total (a damaged stream) stops at the last symbol
            freq = _freq(p[v], budget, whole, inv) + (extra if v == top else 0)
            if target < start + freq or v == last:
                break
            start += freq
            v += 1
        out[r, 0], out[r, 1], out[r, 2] = v, start, freq


def int_intervals(logits: np.ndarray | torch.Tensor, tokens: np.ndarray, exp_table: np.ndarray | torch.Tensor,
                  precision: int) -> np.ndarray:
    """``(N, 4)`` int64: each row's ``(start, freq)`` for its token under ``int_frequencies``' table,
    then the token's ``P`` and the row's ``sum(P)``: its probability before quantisation, for
    statistics. A CPU array goes through numba; a tensor stays on its device (the same integers),
    best with ``exp_table`` already there."""
    if isinstance(logits, torch.Tensor):
        freqs, p = int_frequencies(logits, exp_table, precision)
        tok = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)).to(logits.device)
        pairs = interval(freqs.int(), tok)
        return torch.cat([pairs, p.gather(1, tok[:, None]), p.sum(-1, keepdim=True)], 1).cpu().numpy()
    total, budget = int_budget(logits.shape[-1], precision)
    out = np.empty((logits.shape[0], 4), dtype=np.int64)
    _int_intervals(np.ascontiguousarray(logits), np.ascontiguousarray(tokens, dtype=np.int64), exp_table,
                   budget, total, out)
    return out


def int_lookups(logits: np.ndarray | torch.Tensor, targets: np.ndarray, exp_table: np.ndarray | torch.Tensor,
                precision: int) -> np.ndarray:
    """``(N, 3)`` int64: the symbol whose ``[start, start + freq)`` holds each row's target, then
    start and freq; numba for a CPU array, torch on a tensor's device."""
    if isinstance(logits, torch.Tensor):
        freqs, _ = int_frequencies(logits, exp_table, precision)
        found = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)).to(logits.device)
        return lookup(freqs.int(), found).cpu().numpy()
    total, budget = int_budget(logits.shape[-1], precision)
    out = np.empty((logits.shape[0], 3), dtype=np.int64)
    _int_lookups(np.ascontiguousarray(logits), np.ascontiguousarray(targets, dtype=np.int64), exp_table,
                 budget, total, out)
    return out
