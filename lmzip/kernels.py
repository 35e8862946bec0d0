"""Numba kernels for the integer engine's CPU path: ``intmodel``'s torch helpers, fused, and
the CPU's GEMM.

Each elementwise kernel computes exactly the integers of the torch code it stands for
(``intmodel.shift``, ``normalize``, ``quarters``, ``Runner.rmsnorm``, ``swiglu``, ``rotate``,
``_weights`` and ``_attend_block``; ``softmax`` stands for ``_weights`` alone), tested against it
(``tests/test_kernels.py``); ``matmul`` computes the exact product in int16-by-int8 tiles written
as LLVM vector IR, and ``halves`` and ``join`` are ``exact``'s CPU steps around ``torch._int_mm``,
all tested against Python integers (``tests/test_intengine.py``); ``attend_tiled`` is the
attention over an int8 cache through ``matmul``'s tiles, for prefill blocks and steps, tested
against ``attend``'s int64 loops at the bounds; ``layer`` chains them into one layer's forward pass, tested
against the torch forward pass. They exist for speed: a decoder step feeds
one token a row, and there the torch helpers cost a few hundred small-op dispatches a layer,
several times the step's matmuls; a prefill block's rows are spread over the threads. The torch
helpers stay the reference and the CUDA path.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen
from numba.extending import intrinsic, overload

MANT = 14  # as intmodel.MANT (intmodel imports this module)


def _wide_vectors() -> None:
    """Let LLVM use the 512-bit vectors of a CPU that has them: its tuning for such Intel CPUs
    prefers 256-bit ones (``prefer-256-bit``). On an Ice Lake Xeon, in ten pairs of alternating
    processes, a decoder step of 3 rows took a median 31 ms (28-36) against 40 ms (27-43); of 1 and
    8 rows, 1 to 5% less. No kernel's integers depend on the vector width. Only where
    nobody chose numba's CPU features (``NUMBA_CPU_FEATURES``); numba reads them when its first
    function is made, so the ``lmzip`` package imports this module before any other."""
    if numba.config.CPU_FEATURES is None:
        features = codegen.get_host_cpu_features()
        if "+avx512f" in features.split(","):
            numba.config.CPU_FEATURES = features + ",-prefer-256-bit"


_wide_vectors()

_jit = numba.njit(cache=True, nogil=True)
_rows_jit = numba.njit(cache=True, nogil=True, parallel=True)  # independent rows, spread over the threads


@numba.njit(cache=True, nogil=True, inline="always")
def nshift(x, s):
    """``intmodel.shift`` for one int64: ``x * 2**-s`` rounded half up. Without a branch, so that
    loops of it vectorise: one of the two shifts is always 0."""
    r, left = min(max(s, 0), 62), min(max(-s, 0), 62)
    return ((x + ((np.int64(1) << r) >> 1)) >> r) << left


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


@numba.njit(cache=True, nogil=True, inline="always")
def _normalize_row(x, m, bits):
    """One row ``x`` to ``bits``-bit mantissas in ``m``; returns the exponent. Plain loops over row
    views, so that they vectorise (1.7 times as fast as indexing ``x[i, j]``)."""
    top = 0
    for j in range(x.shape[0]):
        top = max(top, abs(x[j]))
    s = _bit_length(top) - bits
    for j in range(x.shape[0]):
        m[j] = nshift(x[j], s)
    return s


@numba.njit(cache=True, nogil=True, inline="always")
def _clamp_row(m, top):
    for j in range(m.shape[0]):
        m[j] = min(max(m[j], -top), top)


@_rows_jit
def _narrow(x, kv):
    """``intmodel.narrow``: rows ``x (N, n)`` to ``kv = (bits, top)`` mantissas ``(N, n)``, clamped
    to ``+-top``, and the exponents' change ``(N,)``."""
    bits, top = kv  # unpacked outside the parallel loop, which numba's parfors cannot index a tuple in
    m, s = np.empty(x.shape, np.int64), np.empty(x.shape[0], np.int64)
    for i in numba.prange(x.shape[0]):
        s[i] = _normalize_row(x[i], m[i], bits)
        _clamp_row(m[i], top)
    return m, s


@_rows_jit
def _rmsnorm(x, e, gain, params):
    """``Runner.rmsnorm`` of rows ``x (N, n)`` at exponents ``e (N,)``; ``params``: (z, eps_m, eps_z)."""
    z, eps_m, eps_z = params[0], params[1], params[2]
    n = x.shape[1]
    m, em = np.empty(x.shape, np.int64), np.empty(x.shape[0], np.int64)
    for i in numba.prange(x.shape[0]):
        h = np.empty(n, np.int64)
        s = _normalize_row(x[i], h, MANT + 1)
        ss = 0
        for j in range(n):
            ss += h[j] * h[j]
        eps = nshift(np.int64(eps_m), eps_z - 20 + 2 * (e[i] + s))
        r = (np.int64(1) << 50) // max(_isqrt((ss << 20) // n + eps), 1)
        for j in range(n):
            h[j] = h[j] * gain[j] * r
        em[i] = _normalize_row(h, m[i], MANT) - 50 + 10 - z
    return m, em


@_rows_jit
def _swiglu(g, eg, u, table, grid, rng, one):
    """``Runner.swiglu`` of rows ``g (N, I)`` at exponents ``eg (N,)`` and ``u (N, I)``, one pass a
    row: the product's mantissas ``(N, I)`` and exponents ``(N,)``, and ``u``'s exponents ``(N,)``."""
    pm, sp, su = np.empty(g.shape, np.int64), np.empty(g.shape[0], np.int64), np.empty(g.shape[0], np.int64)
    last = table.shape[0] - 1
    for i in numba.prange(g.shape[0]):
        gi, oi, ei = g[i], pm[i], eg[i]
        su[i] = _normalize_row(u[i], oi, MANT)  # u's mantissas, then the products in their place
        for j in range(gi.shape[0]):
            x16 = nshift(gi[j], -(ei + 16))
            idx = min(max(nshift(x16, 16 - grid) + (rng << grid), 0), last)
            oi[j] = nshift(x16 * table[idx], one) * oi[j]
        sp[i] = _normalize_row(oi, oi, MANT)
    return pm, sp, su


@_rows_jit
def _rotate(m, slots, table, one, kv):
    """RoPE of mantissas ``(R, H, T, d)``: rotated mantissas of ``kv = (bits, top)`` and exponent
    changes ``(R, H, T)``."""
    R, H, T, d = m.shape
    bits, most = kv
    out, s = np.empty(m.shape, np.int64), np.empty(m.shape[:3], np.int64)
    half = d // 2
    for ab in numba.prange(R * H):
        a, b = ab // H, ab % H
        row = np.empty(d, np.int64)
        for t in range(T):
            top = 0
            for c in range(half):
                cos, sin = table[0, slots[t], c], table[1, slots[t], c]
                lo, hi = m[a, b, t, c], m[a, b, t, c + half]
                row[c] = lo * cos - hi * sin
                row[c + half] = hi * cos + lo * sin
                top = max(top, abs(row[c]), abs(row[c + half]))
            si = _bit_length(top) - bits
            for c in range(d):
                out[a, b, t, c] = min(max(nshift(row[c], si), -most), most)
            s[a, b, t] = si - one
    return out, s


@_rows_jit
def _shift_rows(x, s):
    out = np.empty(x.shape, np.int64)
    for i in numba.prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = nshift(x[i, j], s[i])
    return out


def _rows(x: torch.Tensor) -> np.ndarray:
    return x.reshape(-1, x.shape[-1]).numpy()


def shift_rows(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``intmodel.shift(x, s[..., None])``: CPU int64 rows ``(..., n)``, one shift a row ``s (...)``."""
    return torch.from_numpy(_shift_rows(_rows(x), s.reshape(-1).numpy()).reshape(x.shape))


def rmsnorm(x: torch.Tensor, e: torch.Tensor, gain: np.ndarray, eps_m: int, eps_z: int,
            z: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Runner.rmsnorm`` of CPU rows ``(..., n)`` at exponents ``e (...)``."""
    m, em = _rmsnorm(_rows(x), e.reshape(-1).numpy(), gain, np.array([z, eps_m, eps_z], np.int64))
    return torch.from_numpy(m.reshape(x.shape)), torch.from_numpy(em.reshape(x.shape[:-1]))


def rotate(m: torch.Tensor, slots: torch.Tensor, table: np.ndarray, one: int,
           kv: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``Runner.rotate`` of CPU mantissas ``(R, H, T, d)`` at ``slots (T,)``, to ``kv = (bits, top)``."""
    out, s = _rotate(m.numpy(), slots.numpy(), table, one, kv)
    return torch.from_numpy(out), torch.from_numpy(s)


# -- the exact GEMM ---------------------------------------------------------------------------
# ``matmul`` multiplies int16 mantissas by int8 weights in tiles of ``TILE_ROWS`` rows by
# ``TILE_COLS`` columns. The weights are packed once (``pack``) so that a tile's step reads, for
# one pair of reduction indices, the 16 columns' weight pairs as one 32-byte vector; each row's
# pair of mantissas is broadcast against it. Every step is then pairs of products added in int32,
# which LLVM emits as ``pmaddwd`` on x86 (16 products an instruction in a 256-bit register; for
# an Ice Lake target, VNNI's ``vpdpwssd``, seen in the assembly) and as the equivalent
# multiply-adds elsewhere. The pair sums and their int32 totals are exact: at most
# ``2 * KPAIRS`` products of ``|m| <= 2**14`` and ``|w| <= 127`` (below 2**31), then int64. On an
# AVX2 Zen 3 with 2 threads, ``bench/int_engine.py``'s roofline measured it at 167 GOP/s at
# 1024^3 (benchmarks/int-engine-avx2-portability-speed.md at commit bc6a7ec; 127 in the same
# file at d544186, on a day the float engine also ran 13% slower), where the former
# row-by-column dot products had run 57 (that file at a9e1619).

KPAIRS = 512  # pairs summed in int32 before int64: 1024 * 2**14 * 127 < 2**31
TILE_ROWS = 4
TILE_COLS = 16  # two 8-lane int32 vectors


def _tile_intrinsic(rows: int):
    """An intrinsic ``tile(m, w, r, c0, k0, k1, acc)``: for ``rows`` rows of int16 ``m (M, 2P)`` from
    ``r`` and the 16 weight columns from ``c0``, ``acc[i, j] = sum over k0 <= k < k1 of
    m[r+i, 2k] * w[c0+j, 2k] + m[r+i, 2k+1] * w[c0+j, 2k+1]`` in int32, written to ``acc``'s first
    ``rows * 16`` int32. The int8 weights come either packed (``pack``: a 32-byte load a step) or
    as a plain C-contiguous ``(K, N)`` matrix, whose rows ``2k`` and ``2k + 1`` are interleaved in
    registers (the KV cache, as ``intmodel.Cache`` lays it out). Written as LLVM vector IR:
    numba's loops do not vectorise to it."""
    i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    pair, w16, wide, half = ir.VectorType(i16, 2), ir.VectorType(i8, 16), ir.VectorType(i32, 16), ir.VectorType(i32, 8)
    even, odd = ir.Constant(half, list(range(0, 16, 2))), ir.Constant(half, list(range(1, 16, 2)))
    spread = ir.Constant(wide, [j % 2 for j in range(16)])
    # columns 8h .. 8h + 7 of rows 2k and 2k + 1 in turn, as pack lays them out
    zips = [ir.Constant(wide, [8 * h + j // 2 + 16 * (j % 2) for j in range(16)]) for h in range(2)]

    def dot_pairs(builder, a, b):  # (16,) x (16,) int32 -> (8,) sums of adjacent products
        prod = builder.mul(a, b)
        undef = ir.Constant(wide, ir.Undefined)
        return builder.add(builder.shuffle_vector(prod, undef, even), builder.shuffle_vector(prod, undef, odd))

    @intrinsic
    def tile(typingctx, m, w, r, c0, k0, k1, acc):
        if not (m.dtype == types.int16 and m.ndim == 2 and w.dtype == types.int8 and w.ndim in (2, 3)
                and m.layout == w.layout == "C"):  # the IR reads rows as they lie
            raise numba.core.errors.TypingError("tile: C-contiguous int16 rows and int8 weights, packed or plain")
        packed = w.ndim == 3

        def codegen(context, builder, signature, args):
            mm, ww, out = (cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i])
                           for i in (0, 1, 6))
            r, c0, first, last = args[2], args[3], args[4], args[5]
            width, stride = builder.extract_value(mm.shape, 1), builder.extract_value(ww.strides, 0)
            base = builder.gep(ww.data, [builder.mul(builder.sdiv(c0, ir.Constant(i64, TILE_COLS)), stride)
                                         if packed else c0])
            entry = builder.block
            loop, done = builder.append_basic_block("tile.loop"), builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed("<", first, last), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(first, entry)
            sums = [builder.phi(half) for _ in range(2 * rows)]
            for s in sums:
                s.add_incoming(ir.Constant(half, None), entry)

            def load16(at):
                return builder.load(builder.bitcast(at, w16.as_pointer()), align=1)

            if packed:
                at = builder.gep(base, [builder.mul(k, ir.Constant(i64, 32))])
                w = [builder.sext(load16(builder.gep(at, [ir.Constant(i64, 16 * h)])), wide) for h in range(2)]
            else:
                at = builder.gep(base, [builder.mul(builder.add(k, k), stride)])
                a, b = load16(at), load16(builder.gep(at, [stride]))
                w = [builder.sext(builder.shuffle_vector(a, b, zips[h]), wide) for h in range(2)]
            new = []
            for i in range(rows):
                row = builder.add(builder.mul(builder.add(r, ir.Constant(i64, i)), width), builder.add(k, k))
                x = builder.load(builder.bitcast(builder.gep(mm.data, [row]), pair.as_pointer()), align=2)
                x = builder.sext(builder.shuffle_vector(x, ir.Constant(pair, ir.Undefined), spread), wide)
                new += [builder.add(sums[2 * i + h], dot_pairs(builder, x, w[h])) for h in range(2)]
            step = builder.add(k, ir.Constant(i64, 1))
            k.add_incoming(step, loop)
            for s, v in zip(sums, new):
                s.add_incoming(v, loop)
            builder.cbranch(builder.icmp_signed("<", step, last), loop, done)
            builder.position_at_end(done)
            final = []
            for v in new:
                f = builder.phi(half)
                f.add_incoming(ir.Constant(half, None), entry)
                f.add_incoming(v, loop)
                final.append(f)
            for j, f in enumerate(final):
                builder.store(f, builder.bitcast(builder.gep(out.data, [ir.Constant(i64, 8 * j)]), half.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(m, w, r, c0, k0, k1, acc), codegen

    return tile


_tile1, _tile2, _tile3, _tile4 = (_tile_intrinsic(rows) for rows in range(1, TILE_ROWS + 1))


@_rows_jit
def pack(w):
    """Int8 weights ``w (N, K)`` in ``matmul``'s form ``(ceil(N / 16), ceil(K / 2), 32)``: block
    ``b``, pair ``k`` holds the weights ``2k, 2k + 1`` of columns ``16b .. 16b + 15`` in turn;
    zeros pad. Once a weight, at load: the blocks spread over the threads."""
    n, k = w.shape
    p = np.zeros((-(-n // TILE_COLS), -(-k // 2), 2 * TILE_COLS), np.int8)
    for b in numba.prange(p.shape[0]):
        for c in range(b * TILE_COLS, min(n, (b + 1) * TILE_COLS)):
            j = 2 * (c % TILE_COLS)
            for i in range(k):
                p[b, i >> 1, j + (i & 1)] = w[c, i]
    return p


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_at(m, w, r, b, mult, out, acc, total):
    """Rows ``r .. r + TILE_ROWS - 1`` (or to the last) and column block ``b`` of
    ``out = (m @ w.T) * mult`` for int16 ``m (M, 2P)``, through the scratch ``acc`` (int32) and
    ``total`` (int64), both ``(TILE_ROWS, TILE_COLS)``; ``w`` as the tiles take it (``pack``'s
    form, or a plain ``(K, N)`` matrix)."""
    rows, n = out.shape
    pairs = m.shape[1] // 2
    cols = min(TILE_COLS, n - b * TILE_COLS)
    t = min(TILE_ROWS, rows - r)
    total[:] = 0
    for k0 in range(0, pairs, KPAIRS):
        k1 = min(k0 + KPAIRS, pairs)
        if t == 4:  # the last rows in one tile too: each tile reads the weights once
            _tile4(m, w, r, b * TILE_COLS, k0, k1, acc)
        elif t == 3:
            _tile3(m, w, r, b * TILE_COLS, k0, k1, acc)
        elif t == 2:
            _tile2(m, w, r, b * TILE_COLS, k0, k1, acc)
        else:
            _tile1(m, w, r, b * TILE_COLS, k0, k1, acc)
        for i in range(t):
            for j in range(TILE_COLS):
                total[i, j] += acc[i, j]
    for i in range(t):
        for j in range(cols):
            out[r + i, b * TILE_COLS + j] = total[i, j] * mult[b * TILE_COLS + j]


@numba.njit(numba.void(numba.int16[:, ::1], numba.int8[:, :, ::1], numba.int64[::1], numba.int64[:, ::1]),
            cache=True, nogil=True, parallel=True)
def _matmul(m, p, mult, out):
    """``out = (m @ w.T) * mult`` for mantissas ``m (M, 2P)`` and ``p = pack(w)``, ``out (M, N)``:
    the column blocks spread over the threads, each reading its weights once for all the rows."""
    for b in numba.prange(p.shape[0]):
        acc, total = np.empty((TILE_ROWS, TILE_COLS), np.int32), np.empty((TILE_ROWS, TILE_COLS), np.int64)
        for r in range(0, m.shape[0], TILE_ROWS):
            _tile_at(m, p, r, b, mult, out, acc, total)


@_jit
def _gemm(m, w, n):
    """``m @ w`` on one thread, for ``attend_tiled``, whose own loop is spread over the threads:
    int16 ``m (M, 2P)`` by the first ``2P`` rows and ``n`` columns of a plain int8 ``w``, ``(M, n)``
    int64 out. ``w``'s rows must hold whole 16-column blocks, and ``m`` zeros where ``w``'s rows
    are not to count. Row tiles outside, column blocks inside: here ``m`` (a block's queries or
    numerators) is the large operand and ``w`` (one head's keys or values) the small one."""
    out = np.empty((m.shape[0], n), np.int64)
    ones = np.ones(n, np.int64)
    acc, total = np.empty((TILE_ROWS, TILE_COLS), np.int32), np.empty((TILE_ROWS, TILE_COLS), np.int64)
    for r in range(0, m.shape[0], TILE_ROWS):
        for b in range(-(-n // TILE_COLS)):
            _tile_at(m, w, r, b, ones, out, acc, total)
    return out


@_jit
def _mantissas(m, pairs):
    """Int64 mantissas ``(M, K)`` as int16 ``(M, 2 * pairs)``, zeros after column K."""
    out = np.zeros((m.shape[0], 2 * pairs), np.int16)
    out[:, : m.shape[1]] = m
    return out


def matmul(m: torch.Tensor, p: np.ndarray, mult: np.ndarray) -> torch.Tensor:
    """``(m @ w.T) * mult`` in int64 for CPU int64 mantissas ``m (M, K)``, ``|m| <= 2**14``, int8
    weights packed as ``p = pack(w)`` and ``mult (N,)``: exact by construction (int32 sums of at
    most ``2 * KPAIRS`` products, then int64)."""
    return torch.from_numpy(_mm(m.numpy(), p, mult))


@numba.njit(cache=True, nogil=True, parallel=True)
def halves(m, rows):
    """``exact.halves`` of int64 mantissas ``m (M, K)``: int8 ``(max(2M, rows), K)``."""
    M, K = m.shape
    out = np.zeros((max(2 * M, rows), K), np.int8) if rows > 2 * M else np.empty((2 * M, K), np.int8)
    for i in numba.prange(M):
        for j in range(K):
            lo = ((m[i, j] + 128) & 255) - 128
            out[i, j] = (m[i, j] - lo) >> 8
            out[M + i, j] = lo
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def join(acc, rows, mult):
    """``exact.join``: ``(256 * acc[i] + acc[rows + i]) * mult`` as int64 ``(rows, N)``."""
    out = np.empty((rows, acc.shape[1]), np.int64)
    for i in numba.prange(rows):
        for j in range(acc.shape[1]):
            out[i, j] = (np.int64(acc[i, j]) * 256 + np.int64(acc[rows + i, j])) * mult[j]
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _softmax_row(acc, eq, ke, ve, lo, hi, mult, z, table, scratch, out):
    """One query's softmax over keys ``lo..hi`` of its integer scores ``acc (L,)`` (int64, or
    float64 integers): each key's numerator, shifted to the query's value exponent, into ``out``
    (which may be ``acc``); returns their total and that exponent. ``scratch`` (int64, at least
    ``hi + 1 - lo``) must not overlap ``out``. Four plain loops over views that start at 0: so
    written, LLVM vectorises each (measured 5 times as fast as one loop over ``lo..hi``)."""
    n = hi + 1 - lo
    s, a, k, v, o = scratch[:n], acc[lo : hi + 1], ke[lo : hi + 1], ve[lo : hi + 1], out[lo : hi + 1]
    top = np.iinfo(np.int64).min
    for j in range(n):  # the scores in 2**-FS nats
        s[j] = nshift(np.int64(a[j]) * mult, z - eq - np.int64(k[j]))
        top = max(top, s[j])
    e_ref = -(1 << 30)
    for j in range(n):
        e_ref = max(e_ref, np.int64(v[j]))
    last = table.shape[0] - 1
    total = 0
    for j in range(n):
        s[j] = table[min(top - s[j], last)]
        total += s[j]
    for j in range(n):
        o[j] = nshift(s[j], e_ref - np.int64(v[j]))
    return total, e_ref


@numba.njit(cache=True, nogil=True, inline="always")
def floordiv(a, w, inv):
    """``a // w`` for ``|a| < 2**62``, ``1 <= w < 2**62`` and a quotient below 2**50 in size, given
    ``inv = 1 / w`` in float64: ``a * inv`` is within a few 2**-53 of the quotient, relatively, so
    its floor is off by at most one, then corrected in integers. An int64 division costs several
    times as much, and does not vectorise: the integer tables divide once for every symbol of
    every table (``quantize``), attention once for every output value (``_quarters_row``)."""
    q = np.int64(np.floor(np.float64(a) * inv))
    if q * w > a:
        q -= 1
    elif (q + 1) * w <= a:
        q += 1
    return q


@numba.njit(cache=True, nogil=True, inline="always")
def _quarters_row(num, total, out):
    """``intmodel.quarters`` of one query: its weighted values ``num (d,)`` (integers, float64 or
    int64) over its softmax ``total`` into ``out``, by ``floordiv``: ``|4 num / total| <= 2**16``,
    since ``num / total`` is a mean of values ``|v| <= 2**14``. torch's int64 floor division took
    18 of 19 ms of a prefill block's last step (0.6 ms this way, Ice Lake Xeon)."""
    w = 2 * total
    inv = 1.0 / w
    for c in range(num.shape[0]):
        out[c] = floordiv(np.int64(num[c]) * 8 + total, w, inv)


@numba.njit(cache=True, nogil=True, parallel=True)
def attend(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref):
    """``Runner._attend_block`` straight from the cache (int16 or int8), for a block of queries or one (the
    decoder's step): the same integers, without reading the cache as float64 or scoring keys a
    query cannot see. Queries ``q (R, H, T, d)`` at exponents ``eq (R, H, T)`` and slots
    ``qslot (T,)``; one layer's cache, keys ``(R, G, d, L)`` and values ``(R, G, L, d)`` (``Cache``);
    a query sees the keys up to its slot, and
    within ``window`` of it (0: all); scores are ``q . k * mult * 2**-z`` with the exponents.
    Out: ``o (R, H, T, d)`` at 2**(ref - 2) and ``ref (R, H, T)``."""
    rows, heads, T, d = q.shape
    group = heads // k.shape[1]
    for idx in numba.prange(rows * heads * T):
        r, h, t = idx // (heads * T), (idx // T) % heads, idx % T
        g = h // group
        last = qslot[t]
        first = max(0, last - window + 1) if window > 0 else 0
        acc = np.zeros(last + 1, np.int64)
        for c in range(d):  # |q|, |k| <= 2**14: each product fits in int32 x int32 -> int64
            qc, kc = np.int64(np.int32(q[r, h, t, c])), k[r, g, c]
            for j in range(first, last + 1):
                acc[j] += qc * np.int64(kc[j])
        total, e_ref = _softmax_row(acc, eq[r, h, t], ke[r, g], ve[r, g], first, last, mult, z, table,
                                    np.empty(last + 1 - first, np.int64), acc)
        num = np.zeros(d, np.int64)
        for j in range(first, last + 1):
            p = np.int64(np.int32(acc[j]))  # a softmax numerator, <= 2**20
            for c in range(d):
                num[c] += p * np.int64(v[r, g, j, c])
        _quarters_row(num, total, o[r, h, t])
        ref[r, h, t] = e_ref


@numba.njit(cache=True, nogil=True, parallel=True)
def softmax(scores, eq, ke, ve, qslot, window, mult, z, table, total, ref):
    """``attend``'s softmax for a block of queries whose scores ``q . k`` a float64 GEMM computed
    (exactly: integers below 2**35): ``scores (R, G, gT, L)`` are overwritten by the numerators,
    0 where a query does not see a key; ``total`` and ``ref (R, G, gT)`` receive their sum and
    value exponent. Query ``i`` of a KV group sits at slot ``qslot[i]``; the rest as ``attend``."""
    R, G, gT, L = scores.shape
    for idx in numba.prange(R * G * gT):
        r, g, i = idx // (G * gT), (idx // gT) % G, idx % gT
        last = qslot[i]
        first = max(0, last - window + 1) if window > 0 else 0
        row = scores[r, g, i]
        total[r, g, i], ref[r, g, i] = _softmax_row(row, eq[r, g, i], ke[r, g], ve[r, g], first, last, mult, z,
                                                    table, np.empty(L, np.int64), row)
        row[:first] = 0.0
        row[last + 1 :] = 0.0


ATT_SPLIT = 10  # attend_tiled's numerators (<= 2**20) as two halves below 2**10, for the int16 tiles
QUERY_TOKENS = 64  # attend_tiled's tokens a pass: a pass scores only the keys its last token sees


@numba.njit(cache=True, nogil=True, parallel=True)
def attend_tiled(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref):
    """``attend`` over an int8 cache (slots ``qslot`` ascending), its two products through
    ``matmul``'s tiles straight from the cache, one KV head of a row a thread: the scores
    ``q . k`` (int16 mantissas by the keys, stored ``(d, L)``), then the numerators ``p <= 2**20``
    by the values ``(L, d)``, as ``p = 2**ATT_SPLIT * hi + lo`` with both halves below 2**10
    (int32 sums of at most 1024 products below 2**17, exact), added in int64; the halves go
    through one GEMM, as rows ``0..n-1`` and ``n..2n-1``. A block's queries go ``QUERY_TOKENS``
    tokens at a time, each pass up to the keys its last query sees, so a long block (a chunk's
    first) scores about half the keys of its square. The same integers as ``attend``."""
    rows, T, G = q.shape[0], q.shape[2], k.shape[1]
    for rg in numba.prange(rows * G):
        for t0 in range(0, T, QUERY_TOKENS):
            _attend_pass(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref, rg // G, rg % G, t0,
                         min(t0 + QUERY_TOKENS, T))


@numba.njit(cache=True, nogil=True, inline="always")
def _attend_pass(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref, r, g, t0, t1):
    """``attend_tiled`` for row ``r``, KV head ``g`` and the block's tokens ``t0..t1-1``."""
    d, group, T = q.shape[3], q.shape[1] // k.shape[1], t1 - t0
    end = qslot[t1 - 1] + 1
    n, pairs = group * T, -(-end // 2)
    qs = np.empty((n, d), np.int16)
    for i in range(n):
        for c in range(d):
            qs[i, c] = q[r, g * group + i // T, t0 + i % T, c]
    scores = _gemm(qs, k[r, g], end)  # (n, end)
    totals = np.empty(n, np.int64)
    scratch = np.empty(end, np.int64)
    halves = np.zeros((2 * n, 2 * pairs), np.int16)  # zeros past each query's keys
    for i in range(n):
        h, t = g * group + i // T, t0 + i % T
        last = qslot[t]
        first = max(0, last - window + 1) if window > 0 else 0
        row = scores[i]
        totals[i], ref[r, h, t] = _softmax_row(row, eq[r, h, t], ke[r, g], ve[r, g], first, last, mult, z,
                                               table, scratch, row)
        for j in range(first, last + 1):
            p = np.int32(row[j])  # 0 <= p <= 2**20: 32-bit shifts, which vectorise where 64-bit ones do not
            halves[i, j], halves[n + i, j] = p >> ATT_SPLIT, p & ((1 << ATT_SPLIT) - 1)
    num = _gemm(halves, v[r, g], d)
    for i in range(n):
        _quarters_row((num[i] << ATT_SPLIT) + num[n + i], totals[i], o[r, g * group + i // T, t0 + i % T])


@_rows_jit
def _quarters(num, total):
    out = np.empty(num.shape, np.int64)
    for i in numba.prange(num.shape[0]):
        _quarters_row(num[i], total[i], out[i])
    return out


def quarters(num: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``intmodel.quarters`` of CPU float64 integers ``num (..., d)`` and int64 totals ``(...)``."""
    return torch.from_numpy(_quarters(_rows(num), total.reshape(-1).numpy()).reshape(num.shape))


# -- one whole layer ------------------------------------------------------------------------
# ``layer`` is ``Runner.attention`` then ``Runner.mlp`` in one call, so a decoder step costs 30
# calls into numba, not a few thousand torch and numpy dispatches. Its stages between the matmuls
# (``_rmsnorm``, ``_attn_mid``, ``_mlp_in``, ``_swiglu``, ``_residual``) are kernels of their own,
# which ``Runner._cpu_layer`` calls around another GEMM (and a prefill block's float64 attention,
# between ``_qkv`` and ``_merge_heads``). Like the kernels above, they allocate and return their
# outputs.

@_jit
def _mm(m, w, mult):
    """``Runner.linear``'s product: mantissas ``(N, K)`` through int8 weights ``(M, K)`` packed as
    ``w`` (``pack``), ``(N, M)`` int64."""
    y = np.empty((m.shape[0], mult.shape[0]), np.int64)
    _matmul(_mantissas(m, w.shape[1]), w, mult, y)
    return y


@_rows_jit
def _residual(x, y, e, gain, params, fh):
    """``x += Runner.residual(y, e, norm)``: the norm only where it has gains (Gemma 3)."""
    if gain.shape[0] > 0:
        y, e = _rmsnorm(y, e, gain, params)
    for i in numba.prange(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += nshift(y[i, j], -(e[i] + fh))


@_rows_jit
def _heads(y, ey, rows, T, heads, d):
    """``y (R*T, heads*d)`` at exponents ``ey (R*T,)`` to per-head mantissas ``(R, heads, T, d)`` and
    exponents, as ``project``."""
    m, s = np.empty((rows * heads * T, d), np.int64), np.empty(rows * heads * T, np.int64)
    for rh in numba.prange(rows * heads):
        r, h = rh // heads, rh % heads
        for t in range(T):
            i = rh * T + t
            s[i] = _normalize_row(y[r * T + t, h * d : (h + 1) * d], m[i], MANT) + ey[r * T + t]
    return m.reshape(rows, heads, T, d), s.reshape(rows, heads, T)


@_jit
def _qkv(yq, yk, yv, e, zs, rows, start, k, raw, v, ke, re, ve, kv, gains, params, heads, rope, rope_one):
    """``Runner.attention`` from the q, k, v products ``(R*T, ·)`` of rows at exponents ``e - zs[i]``
    to the attention proper: the block at slots ``start..`` joins the layer's cache (``Cache``'s
    layout) of ``kv = (bits, top)`` mantissas (``layer``'s arguments), and the queries leave rotated,
    ``(R, H, T, d)`` at exponents ``(R, H, T)``."""
    n, groups, d = yq.shape[0], k.shape[1], k.shape[2]
    T = n // rows
    slots = np.arange(start, start + T)
    q, eq = _heads(yq, e - zs[0], rows, T, heads, d)
    kk, ek = _heads(yk, e - zs[1], rows, T, groups, d)
    vv, ev = _heads(yv, e - zs[2], rows, T, groups, d)
    if gains[2].shape[0] > 0:  # Gemma 3's q and k norms
        qm, qe = _rmsnorm(q.reshape(-1, d), eq.reshape(-1), gains[2], params[2])
        q, eq = qm.reshape(q.shape), qe.reshape(eq.shape)
        km, ke_ = _rmsnorm(kk.reshape(-1, d), ek.reshape(-1), gains[3], params[3])
        kk, ek = km.reshape(kk.shape), ke_.reshape(ek.shape)
    if kv[0] < MANT:  # a narrow cache (int/2): keys and values to its mantissas
        kk, ek = _narrow_heads(kk, ek, kv)
        vv, ev = _narrow_heads(vv, ev, kv)
    qr, sq = _rotate(q, slots, rope, rope_one, (MANT, 1 << MANT))
    kr, sk = _rotate(kk, slots, rope, rope_one, kv)
    for r in range(rows):  # the cache: raw and rotated keys, values
        for g in range(groups):
            for t in range(T):
                j = start + t
                raw[r, g, j], re[r, g, j] = kk[r, g, t], ek[r, g, t]
                k[r, g, :, j], ke[r, g, j] = kr[r, g, t], ek[r, g, t] + sk[r, g, t]
                v[r, g, j], ve[r, g, j] = vv[r, g, t], ev[r, g, t]
    return qr, eq + sq


@_jit
def _narrow_heads(m, e, kv):
    """``_narrow`` of per-head mantissas ``(R, G, T, d)`` at exponents ``(R, G, T)``."""
    n, s = _narrow(m.reshape(-1, m.shape[-1]), kv)
    return n.reshape(m.shape), e + s.reshape(e.shape)


@_rows_jit
def _merge_heads(o, ref):
    """The attention's output ``(R, H, T, d)`` at 2**(ref - 2), ``ref (R, H, T)``, back to one row a
    token at the token's largest exponent: mantissas ``(R*T, H*d)`` and exponents, for ``o``."""
    rows, heads, T, d = o.shape
    n = rows * T
    om, eo = np.empty((n, heads * d), np.int64), np.empty(n, np.int64)
    for i in numba.prange(n):
        r, t = i // T, i % T
        top = ref[r, :, t].max()
        flat = np.empty(heads * d, np.int64)
        for h in range(heads):
            for c in range(d):
                flat[h * d + c] = nshift(o[r, h, t, c], top - ref[r, h, t])
        eo[i] = _normalize_row(flat, om[i], MANT) + top - 2
    return om, eo


def _attend_step(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref):
    """``attend_tiled`` over an int8 cache, ``attend`` over int/1's int16 one (too wide for the
    tiles' int32 sums): chosen by the cache's type, as numba compiles the caller."""


@overload(_attend_step)
def _attend_step_typed(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref):
    kernel = attend_tiled if k.dtype == types.int8 else attend

    def impl(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref):
        kernel(q, eq, k, ke, v, ve, qslot, window, mult, z, table, o, ref)

    return impl


@_jit
def _attn_mid(yq, yk, yv, e, zs, rows, start, k, raw, v, ke, re, ve, kv, gains, params, heads, rope, window,
              score_mult, score_z, att_exp, rope_one):
    """``Runner.attention`` between the q, k, v products and the o projection, for a step: ``_qkv``,
    the attention straight from the cache (``_attend_step``), ``_merge_heads``."""
    qr, eq = _qkv(yq, yk, yv, e, zs, rows, start, k, raw, v, ke, re, ve, kv, gains, params, heads, rope, rope_one)
    o, ref = np.empty(qr.shape, np.int64), np.empty(qr.shape[:3], np.int64)
    _attend_step(qr, eq, k, ke, v, ve, np.arange(start, start + qr.shape[2]), window, score_mult, score_z, att_exp, o, ref)
    return _merge_heads(o, ref)


@_jit
def _mlp_in(x, y, ey, gains, params, fh):
    """The attention's ``o`` product ``y`` at exponents ``ey`` joins ``x`` (in place); then the MLP's
    norm of ``x``: mantissas and exponents, for ``gate`` and ``up``."""
    _residual(x, y, ey, gains[4], params[4], fh)
    return _rmsnorm(x, np.full(x.shape[0], -fh, np.int64), gains[1], params[1])


@_jit
def layer(x, rows, start, k, raw, v, ke, re, ve, kv, weights, mults, zs, gains, params, heads, rope, window,
          score_mult, score_z, att_exp, gate_table, consts):
    """One layer for the block ``x (R*T, D)`` (int64 at 2**-FH, row ``r * T + t``) at slots
    ``start..``, in place: the layer's cache (``Cache``'s layout) gains the block's keys and values,
    as ``kv = (bits, top)`` mantissas.
    ``weights``/``mults``/``zs``: q, k, v, o, gate, up, down; ``gains``/``params``: the attention,
    MLP, q, k, post-attention and post-MLP norms (empty gains: none); ``consts``: FH, GATE_X,
    GATE_RANGE, GATE_ONE, ROPE_ONE."""
    fh, gate_x, gate_range, gate_one, rope_one = consts
    m, e = _rmsnorm(x, np.full(x.shape[0], -fh, np.int64), gains[0], params[0])
    om, eo = _attn_mid(_mm(m, weights[0], mults[0]), _mm(m, weights[1], mults[1]), _mm(m, weights[2], mults[2]),
                       e, zs, rows, start, k, raw, v, ke, re, ve, kv, gains, params, heads, rope, window,
                       score_mult, score_z, att_exp, rope_one)
    m, e = _mlp_in(x, _mm(om, weights[3], mults[3]), eo - zs[3], gains, params, fh)
    pm, sp, su = _swiglu(_mm(m, weights[4], mults[4]), e - zs[4], _mm(m, weights[5], mults[5]),
                         gate_table, gate_x, gate_range, gate_one)
    _residual(x, _mm(pm, weights[6], mults[6]), sp + su + e - zs[5] - 16 - zs[6], gains[5], params[5], fh)
