"""Exact integer matrix products: the same int64 result from every kernel, order and thread count.

The integer engine multiplies activation mantissas ``|m| <= 2**14`` by int8 weights
``|w| <= 127``. Each mantissa is split into two int8 halves, ``m = 256 * hi + lo`` with
``lo`` in [-128, 127] and ``|hi| <= 64``; both halves go through one matmul (stacked as rows),
and ``256 * (hi @ W) + lo @ W`` is put back together in int64. Two kernels do the products:

- ``float32``, the portable base: float32 matmuls over the integer values, with the reduction
  split into parts of at most ``KSPLIT`` so that every partial sum is an integer below 2**24
  (``128 * 127 * 1032 < 2**24``). Every partial sum is then exact, so any order of additions,
  blocking or vector width gives the same integer. The parts are added in int64. On a CPU, a
  product of at most ``FEW_ROWS`` rows (a decoder step) is instead summed in int64 by a numba
  kernel over the int8 weight, without halves: exact, and faster where reading the weights bounds it.
- ``int8``: ``torch._int_mm``, int8 by int8 into int32 (``|hi @ W| < 64 * 127 * K``, below 2**31
  for K up to 260k). Fast where the kernel is right (VNNI CPUs, CUDA), and wrong where it is
  not (torch's AVX2 CPU kernel saturates 16-bit pair sums), so it is used only after a
  self-test at load on the model's own shapes, extreme values included, against a float64
  reference (exact: ``2**14 * 127 * K < 2**53``).

Both give the same integers, so a file never depends on which one ran.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from . import kernels

KSPLIT = 1032  # float32: reduction parts short enough that |partial sums| < 2**24
FEW_ROWS = 16  # up to this many rows, the CPU multiplies int8 weights directly (measured: faster at 1-16)
HALF = 256


def halves(m: torch.Tensor) -> torch.Tensor:
    """``(M, K)`` int64 mantissas to ``(2M, K)`` int64: the high halves, then the low ones."""
    lo = ((m + 128) & 255) - 128
    return torch.cat([(m - lo) >> 8, lo])


class Weight:
    """An int8 ``(N, K)`` weight as the float32 kernel uses it: the array itself, and its
    transposed float32 parts of the reduction, made on first use (a decoder of a few rows never
    needs them, and start-up skips making 540 MB of them)."""

    def __init__(self, q: np.ndarray, device: torch.device) -> None:
        self.q, self.device, self._parts = q, device, None

    def parts(self) -> list[torch.Tensor]:
        if self._parts is None:
            wt = torch.from_numpy(self.q.T.astype(np.float32))
            self._parts = [wt[k : k + KSPLIT].contiguous().to(self.device) for k in range(0, self.q.shape[1], KSPLIT)]
        return self._parts


class Gemm:
    """``gemm(m, w)``: exact ``m @ q.T`` for int64 ``m (M, K)``, ``|m| <= 2**14``, and int8 ``q (N, K)``.

    On a CPU, up to ``FEW_ROWS`` rows (a decoder step) go through ``kernels.matmul`` on the int8
    weight itself, which is several times faster there than float32 (and ten times on the head).
    """

    name = "float32"

    def weight(self, q: np.ndarray, device: torch.device) -> Weight:
        """The int8 ``(N, K)`` weight in this kernel's form."""
        return Weight(q, device)

    def __call__(self, m: torch.Tensor, w: Weight) -> torch.Tensor:
        if w.device.type == "cpu" and m.shape[0] <= FEW_ROWS:
            return kernels.matmul(m, w.q)
        x = halves(m).float()
        acc, k = None, 0
        for part in w.parts():
            y = (x[:, k : k + part.shape[0]] @ part).long()
            acc = y if acc is None else acc + y
            k += part.shape[0]
        rows = m.shape[0]
        return acc[:rows] * HALF + acc[rows:]


class Int8Gemm(Gemm):
    name = "int8"

    def weight(self, q: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(q.T)).to(device)

    def __call__(self, m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = halves(m).to(torch.int8)
        if x.shape[0] <= 16:  # _int_mm takes more than 16 rows (CUDA); pad with zeros, which add nothing
            x = torch.cat([x, x.new_zeros(17 - x.shape[0], x.shape[1])])
        acc = torch._int_mm(x, w).long()
        rows = m.shape[0]
        return acc[:rows] * HALF + acc[rows : 2 * rows]


def _reference(m: torch.Tensor, q: np.ndarray) -> torch.Tensor:
    """Exact in float64: every partial sum is an integer below 2**53."""
    return (m.double() @ torch.from_numpy(q.T.astype(np.float64)).to(m.device)).long()


def _extremes(rng: np.random.Generator, rows: int, cols: int, top: int) -> np.ndarray:
    """Rows of ``+top``, ``-top``, ``top - 129`` (every low half at its extreme) and random values."""
    x = rng.integers(-top, top + 1, (rows, cols))
    x[0::4], x[1::4], x[2::4] = top, -top, top - 129
    return x


def self_test(gemm: Gemm, shapes: set[tuple[int, int]], device: torch.device, seed: int = 0) -> bool:
    """Whether ``gemm`` gives the exact products on every ``(N, K)`` shape, at a few row counts.

    ``N`` is capped at 8192 (kernels block the output columns far below that) to keep the test
    to a fraction of a second.
    """
    rng = np.random.default_rng(seed)
    for n, k in sorted(shapes):
        q = _extremes(rng, min(n, 8192), k, 127).astype(np.int8)
        w = gemm.weight(np.ascontiguousarray(q), device)
        for rows in (1, 24, 130):
            m = torch.from_numpy(_extremes(rng, rows, k, 1 << 14)).to(device)
            try:
                if not torch.equal(gemm(m, w), _reference(m, q)):
                    return False
            except RuntimeError:  # no such kernel on this device or build
                return False
    return True


def _seconds(gemm: Gemm, n: int, k: int, rows: int, device: torch.device, within: float = float("inf")) -> float:
    """The best of three timings of one ``(rows, k) @ (k, n)`` product, after a warm-up run; just
    the warm-up's time where it is over ``within`` (a slow kernel costs one run)."""
    rng = np.random.default_rng(1)
    w = gemm.weight(rng.integers(-127, 128, (n, k)).astype(np.int8), device)
    m = torch.from_numpy(rng.integers(-(1 << 14), (1 << 14) + 1, (rows, k))).to(device)
    runs = []
    for _ in range(4):
        began = time.perf_counter()
        gemm(m, w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append(time.perf_counter() - began)
        if runs[0] > within:
            return runs[0]
    return min(runs[1:])


def choose(shapes: set[tuple[int, int]], device: torch.device) -> Gemm:
    """The faster kernel here, on a decoder step's row count, among those proved exact: int8 where
    it passes ``self_test`` and beats float32, else float32. Some CPUs run ``_int_mm`` exactly but
    through a slow generic kernel (an AVX2-only AMD EPYC: 50 times slower than float32).

    ``LMZIP_GEMM=float32`` forces the portable kernel (the results are the same integers).
    """
    portable = Gemm()
    if os.environ.get("LMZIP_GEMM", "auto") == "float32" or not hasattr(torch, "_int_mm"):
        return portable
    fast = Int8Gemm()
    n, k = sorted(shapes, key=lambda s: s[0] * s[1])[len(shapes) // 2]  # a layer's, not the head's
    try:
        base = _seconds(portable, n, k, 16, device)
        faster = _seconds(fast, n, k, 16, device, within=50 * base + 0.05) < base
    except RuntimeError:  # no such kernel on this device or build
        return portable
    return fast if faster and self_test(fast, shapes, device) else portable
