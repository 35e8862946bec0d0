"""Numba kernels for the integer engine's CPU path: ``intmodel``'s torch helpers, fused.

Each kernel computes exactly the integers of the torch code it stands for (``intmodel.shift``,
``normalize``, ``Runner.rmsnorm``, ``gate``, ``rotate``, ``_weights`` and ``_attend_block``;
``exact.Gemm``), and is tested against it (``tests/test_kernels.py``, ``test_intengine.py``). They exist for speed alone: a decoder step feeds one token a
row, and there the torch helpers cost a few hundred small-op dispatches a layer, several times
the step's matmuls. The torch helpers stay the reference and the CUDA path.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

MANT = 14  # as intmodel.MANT (intmodel imports this module)

_jit = numba.njit(cache=True, nogil=True)


@numba.njit(cache=True, nogil=True, inline="always")
def nshift(x, s):
    """``intmodel.shift`` for one int64: ``x * 2**-s`` rounded half up."""
    if s >= 0:
        r = min(s, 62)
        return (x + ((1 << r) >> 1)) >> r
    return x << min(-s, 62)


@numba.njit(cache=True, nogil=True, inline="always")
def _bit_length(v):
    b = 0
    while v > 0:
        v >>= 1
        b += 1
    return b


@numba.njit(cache=True, nogil=True, inline="always")
def _isqrt(v):
    r = np.int64(math.floor(math.sqrt(np.float64(v))))
    for _ in range(2):
        if r * r > v:
            r -= 1
        if (r + 1) * (r + 1) <= v:
            r += 1
    return r


@_jit
def _normalize(x, bits, m, s):
    for i in range(x.shape[0]):
        top = 0
        for j in range(x.shape[1]):
            top = max(top, abs(x[i, j]))
        si = _bit_length(top) - bits
        s[i] = si
        for j in range(x.shape[1]):
            m[i, j] = nshift(x[i, j], si)


@_jit
def _rmsnorm(x, e, gain, eps_m, eps_z, z, m, em):
    n = x.shape[1]
    h = np.empty(n, np.int64)
    for i in range(x.shape[0]):
        top = 0
        for j in range(n):
            top = max(top, abs(x[i, j]))
        s = _bit_length(top) - (MANT + 1)
        ss = 0
        for j in range(n):
            h[j] = nshift(x[i, j], s)
            ss += h[j] * h[j]
        eps = nshift(np.int64(eps_m), eps_z - 20 + 2 * (e[i] + s))
        r = (np.int64(1) << 50) // max(_isqrt((ss << 20) // n + eps), 1)
        top = 0
        for j in range(n):
            h[j] = h[j] * gain[j] * r
            top = max(top, abs(h[j]))
        s2 = _bit_length(top) - MANT
        for j in range(n):
            m[i, j] = nshift(h[j], s2)
        em[i] = s2 - 50 + 10 - z


@_jit
def _gate(x, e, by, table, grid, rng, one, out):
    last = table.shape[0] - 1
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x16 = nshift(x[i, j], -(e[i] + 16))
            idx = min(max(nshift(x16, 16 - grid) + (rng << grid), 0), last)
            out[i, j] = nshift(x16 * table[idx], one) * by[i, j]


@_jit
def _rotate(m, slots, table, one, out, s):
    R, H, T, d = m.shape
    half = d // 2
    row = np.empty(d, np.int64)
    for a in range(R):
        for b in range(H):
            for t in range(T):
                top = 0
                for c in range(half):
                    cos, sin = table[0, slots[t], c], table[1, slots[t], c]
                    lo, hi = m[a, b, t, c], m[a, b, t, c + half]
                    row[c] = lo * cos - hi * sin
                    row[c + half] = hi * cos + lo * sin
                    top = max(top, abs(row[c]), abs(row[c + half]))
                si = _bit_length(top) - MANT
                for c in range(d):
                    out[a, b, t, c] = nshift(row[c], si)
                s[a, b, t] = si - one


@_jit
def _shift_rows(x, s, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = nshift(x[i, j], s[i])


def _rows(x: torch.Tensor) -> np.ndarray:
    return x.reshape(-1, x.shape[-1]).numpy()


def normalize(x: torch.Tensor, bits: int = MANT) -> tuple[torch.Tensor, torch.Tensor]:
    """``intmodel.normalize`` of a CPU int64 tensor."""
    m = np.empty(x.shape, np.int64)
    s = np.empty(x.shape[:-1], np.int64)
    _normalize(_rows(x), bits, m.reshape(-1, x.shape[-1]), s.reshape(-1))
    return torch.from_numpy(m), torch.from_numpy(s)


def shift_rows(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``intmodel.shift(x, s[..., None])``: CPU int64 rows ``(..., n)``, one shift a row ``s (...)``."""
    out = np.empty(x.shape, np.int64)
    _shift_rows(_rows(x), s.reshape(-1).numpy(), out.reshape(-1, x.shape[-1]))
    return torch.from_numpy(out)


def rmsnorm(x: torch.Tensor, e: torch.Tensor, gain: np.ndarray, eps_m: int, eps_z: int,
            z: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Runner.rmsnorm`` of CPU rows ``(..., n)`` at exponents ``e (...)``."""
    m = np.empty(x.shape, np.int64)
    em = np.empty(x.shape[:-1], np.int64)
    _rmsnorm(_rows(x), e.reshape(-1).numpy(), gain, eps_m, eps_z, z, m.reshape(-1, x.shape[-1]), em.reshape(-1))
    return torch.from_numpy(m), torch.from_numpy(em)


def gate(x: torch.Tensor, e: torch.Tensor, by: torch.Tensor, table: np.ndarray, grid: int, rng: int,
         one: int) -> torch.Tensor:
    """``Runner.gate``: ``act(x * 2**e) * by`` for CPU rows ``(N, I)``."""
    out = np.empty(x.shape, np.int64)
    _gate(x.numpy(), e.numpy(), by.numpy(), table, grid, rng, one, out)
    return torch.from_numpy(out)


def rotate(m: torch.Tensor, slots: torch.Tensor, table: np.ndarray, one: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Runner.rotate`` of CPU mantissas ``(R, H, T, d)`` at ``slots (T,)``."""
    out = np.empty(m.shape, np.int64)
    s = np.empty(m.shape[:-1], np.int64)
    _rotate(m.numpy(), slots.numpy(), table, one, out, s)
    return torch.from_numpy(out), torch.from_numpy(s)


@numba.njit(cache=True, nogil=True, parallel=True)
def _matmul(m, q, out):
    for n in numba.prange(q.shape[0]):
        for r in range(m.shape[0]):
            acc = 0
            for k in range(m.shape[1]):
                acc += m[r, k] * q[n, k]
            out[r, n] = acc


def matmul(m: torch.Tensor, q: np.ndarray) -> torch.Tensor:
    """``m @ q.T`` in int64 for CPU int64 mantissas ``m (M, K)``, ``|m| <= 2**14``, and int8 ``q (N, K)``:
    exact by construction (``|sum| < 2**14 * 127 * K``). For a few rows, where a GEMM is bound by
    reading its weights, int8 weights read a quarter of float32's bytes."""
    out = np.empty((m.shape[0], q.shape[0]), np.int64)
    _matmul(m.to(torch.int16).numpy(), q, out)
    return torch.from_numpy(out)


@numba.njit(cache=True, nogil=True, inline="always")
def _softmax_row(acc, eq, ke, ve, lo, hi, mult, z, table, out):
    """One query's softmax over keys ``lo..hi`` of scores ``acc (L,)``: into ``out``, each key's
    numerator shifted to the query's value exponent; returns their total and that exponent."""
    top = np.iinfo(np.int64).min
    e_ref = -(1 << 30)
    for j in range(lo, hi + 1):
        out[j] = nshift(acc[j] * mult, z - eq - np.int64(ke[j]))
        top = max(top, out[j])
        e_ref = max(e_ref, np.int64(ve[j]))
    last = table.shape[0] - 1
    total = 0
    for j in range(lo, hi + 1):
        p = table[min(top - out[j], last)]
        total += p
        out[j] = nshift(p, e_ref - np.int64(ve[j]))
    return total, e_ref


@numba.njit(cache=True, nogil=True, parallel=True)
def attend_one(q, eq, k, ke, v, ve, first, last, mult, z, table, o, ref):
    """One query a row (the decoder's step), straight from the int16 cache: the same integers as
    ``Runner._attend_block`` (``test_fused_runner_computes_the_reference_logits``), without reading
    the cache as float64. ``q (R, H, d)``, ``eq (R, H)``; cache ``(R, G, L, d)``; keys
    ``first..last`` visible; scores are ``q . k * mult * 2**-z`` with the exponents."""
    rows, heads, d = q.shape
    group = heads // k.shape[1]
    for rh in numba.prange(rows * heads):
        r, h = rh // heads, rh % heads
        g = h // group
        acc = np.empty(last + 1, np.int64)
        for j in range(first, last + 1):
            dot = 0
            for c in range(d):
                dot += q[r, h, c] * np.int64(k[r, g, j, c])
            acc[j] = dot
        total, e_ref = _softmax_row(acc, eq[r, h], ke[r, g], ve[r, g], first, last, mult, z, table, acc)
        num = np.zeros(d, np.int64)
        for j in range(first, last + 1):
            for c in range(d):
                num[c] += acc[j] * np.int64(v[r, g, j, c])
        for c in range(d):
            o[r, h, c] = (num[c] * 8 + total) // (2 * total)
        ref[r, h] = e_ref


@numba.njit(cache=True, nogil=True, parallel=True)
def attention_weights(acc, eq, ke, ve, qslot, window, mult, z, table, pv, total, ref):
    """``Runner._weights``: from scores ``acc (R, G, Q, L)`` (``q . k``), each query's shifted
    softmax numerators ``pv``, their ``total`` and its value exponent ``ref`` ``(R, G, Q)``."""
    R, G, Q, L = acc.shape
    for idx in numba.prange(R * G * Q):
        r, g, t = idx // (G * Q), (idx // Q) % G, idx % Q
        hi = min(qslot[t], L - 1)
        lo = max(0, qslot[t] - window + 1) if window > 0 else 0
        pv[r, g, t, :] = 0
        total[r, g, t], ref[r, g, t] = _softmax_row(acc[r, g, t], eq[r, g, t], ke[r, g], ve[r, g], lo, hi,
                                                    mult, z, table, pv[r, g, t])
