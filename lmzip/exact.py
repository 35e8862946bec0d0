"""Exact integer matrix products: the same int64 result from every kernel, order and thread count.

The integer engine multiplies activation mantissas ``|m| <= 2**14`` by int8 weights
``|w| <= 127``. Three kernels compute the products, each exact for its own reason:

- ``numba`` (the CPU's portable kernel): ``kernels.matmul``, int32 sums of at most 1024
  int16-by-int8 products, added in int64. Exact by construction (``1024 * 2**14 * 127 < 2**31``).
  Its weights are packed for its tiles (``kernels.pack``).
- ``float32`` (portable, and CUDA's base): each mantissa split into two int8 halves,
  ``m = 256 * hi + lo`` with ``lo`` in [-128, 127] and ``|hi| <= 64``, both through float32
  matmuls, the reduction split into parts of at most ``KSPLIT`` so that every partial sum is an
  integer below 2**24 (``128 * 127 * 1032 < 2**24``), the parts added in int64. Exact by
  construction, whatever order of additions, blocking or vector width the GEMM uses. The
  weights stay int8; each call converts the part it needs.
- ``int8``: ``torch._int_mm`` over the halves, int8 by int8 into int32 (``|hi @ W| < 64 * 127 * K``,
  below 2**31 for K up to 260k). Fast where the kernel is right (VNNI CPUs, CUDA), and wrong
  where it is not (torch's AVX2 CPU kernel saturates 16-bit pair sums), so it is used only after
  a self-test at load on the model's own shapes, extreme values included, against a float64
  reference (exact: ``2**14 * 127 * K < 2**53``).

``choose`` takes the fastest of those proved exact on this machine.

All give the same integers, so a file never depends on which one ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import kernels

KSPLIT = 1032  # float32: reduction parts short enough that |partial sums| < 2**24
HALF = 256
# Which kernels ``choose``'s kept winners were timed against: a new kernel or a faster one changes
# it, so that no machine keeps a winner over kernels that are gone (2: numba's tiles).
KERNELS_REVISION = 2


def halves(m: torch.Tensor, rows: int = 0) -> torch.Tensor:
    """``(M, K)`` int64 mantissas to int8 ``(max(2M, rows), K)``: the high halves, then the low
    ones, then zero rows (which add nothing to a product). numba on a CPU, else ``torch_halves``."""
    return torch.from_numpy(kernels.halves(m.numpy(), rows)) if m.device.type == "cpu" else torch_halves(m, rows)


def join(acc: torch.Tensor, rows: int, mult: torch.Tensor) -> torch.Tensor:
    """The products of ``halves``' rows ``acc (>= 2 * rows, N)`` back to ``(rows, N)`` int64, times
    ``mult (N,)``. numba on a CPU, else ``torch_join``."""
    if acc.device.type == "cpu":
        return torch.from_numpy(kernels.join(acc.numpy(), rows, mult.numpy()))
    return torch_join(acc, rows, mult)


def torch_halves(m: torch.Tensor, rows: int = 0) -> torch.Tensor:
    lo = ((m + 128) & 255) - 128
    x = torch.cat([(m - lo) >> 8, lo]).to(torch.int8)
    return torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])]) if rows > x.shape[0] else x


def torch_join(acc: torch.Tensor, rows: int, mult: torch.Tensor) -> torch.Tensor:
    return (acc[:rows].long() * HALF + acc[rows : 2 * rows].long()) * mult


class Gemm:
    """``gemm(m, gemm.weight(q, device), mult)``: exact ``(m @ q.T) * mult`` for int64 ``m (M, K)``,
    ``|m| <= 2**14``, int8 ``q (N, K)`` and int64 multipliers ``mult (N,)``, ``|mult| < 2**15``
    (``|result| < 2**48``). This one is the ``numba`` kernel (CPU only)."""

    name = "numba"

    def weight(self, q: np.ndarray, device: torch.device):
        """The int8 ``(N, K)`` weight in this kernel's form (``kernels.pack``)."""
        return kernels.pack(q)

    def __call__(self, m: torch.Tensor, w, mult: torch.Tensor) -> torch.Tensor:
        return kernels.matmul(m, w, mult.numpy())


class Float32Gemm(Gemm):
    name = "float32"

    def weight(self, q: np.ndarray, device: torch.device) -> torch.Tensor:
        """The int8 weight ``(N, K)`` as it is: each call converts the part of the reduction it
        multiplies by, so the weights keep int8's memory, not four times as much."""
        return torch.from_numpy(np.ascontiguousarray(q)).to(device)

    def __call__(self, m: torch.Tensor, w: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        x = halves(m).float()
        acc = None
        for k in range(0, w.shape[1], KSPLIT):
            y = (x[:, k : k + KSPLIT] @ w[:, k : k + KSPLIT].T.float()).long()
            acc = y if acc is None else acc + y
        return join(acc, m.shape[0], mult)


class Int8Gemm(Gemm):
    name = "int8"

    def weight(self, q: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(K, N)``: on a CPU a view of the ``(N, K)`` rows, which ``_int_mm`` reads about as fast
        as a transposed copy (0.97 to 1.08 times its time at a prefill block's rows, Ice Lake Xeon)
        without copying 0.1 GB at every start-up (0.3 s) and keeping both; on CUDA a copy."""
        w = torch.from_numpy(np.ascontiguousarray(q)).to(device).T
        return w if device.type == "cpu" else w.contiguous()

    def __call__(self, m: torch.Tensor, w: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
        x = halves(m, rows=17)  # _int_mm takes more than 16 rows (CUDA)
        return join(torch._int_mm(x, w), m.shape[0], mult)


KERNELS = {kernel.name: kernel for kernel in (Gemm, Float32Gemm, Int8Gemm)}


def _reference(m: torch.Tensor, q: np.ndarray, mult: torch.Tensor) -> torch.Tensor:
    """Exact in float64: every partial sum is an integer below 2**53."""
    return (m.double() @ torch.from_numpy(q.T.astype(np.float64)).to(m.device)).long() * mult


def _extremes(rng: np.random.Generator, rows: int, cols: int, top: int) -> np.ndarray:
    """Rows of ``+top``, ``-top``, ``top - 129`` (every low half at its extreme) and random values."""
    x = rng.integers(-top, top + 1, (rows, cols), dtype=np.int8 if top < 128 else np.int64)
    x[0::4], x[1::4], x[2::4] = top, -top, top - 129
    return x


def self_test(gemm: Gemm, shapes: set[tuple[int, int]], device: torch.device, seed: int = 0) -> bool:
    """Whether ``gemm`` gives the exact products on every ``(N, K)`` shape, at a few row counts.

    ``N`` is capped at 2048: kernels block the output columns far below that, and what can go
    wrong is in the reduction over ``K``, which is tested whole. At 8192 the head's shape took 150
    of the test's 200 ms, every start-up (Ice Lake Xeon).
    """
    rng = np.random.default_rng(seed)
    for n, k in sorted(shapes):
        q = _extremes(rng, min(n, 2048), k, 127).astype(np.int8)
        w = gemm.weight(np.ascontiguousarray(q), device)
        mult = torch.from_numpy(rng.integers(-(1 << 15) + 1, 1 << 15, q.shape[0])).to(device)
        mult[:2] = (1 << 15) - 1
        for rows in (1, 24, 130):
            m = torch.from_numpy(_extremes(rng, rows, k, 1 << 14)).to(device)
            try:
                if not torch.equal(gemm(m, w, mult), _reference(m, q, mult)):
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
    mult = torch.ones(n, dtype=torch.int64, device=device)
    gemm(m[:1], w, mult)  # loads the kernel's compiled code: not its speed
    runs = []
    for _ in range(4):
        began = time.perf_counter()
        gemm(m, w, mult)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append(time.perf_counter() - began)
        if runs[0] > within:
            return runs[0]
    return min(runs[1:])


def choose(shapes: set[tuple[int, int]], device: torch.device, rows: int = 256, memo: Path | None = None) -> Gemm:
    """The fastest kernel here for a block of ``rows`` rows (a prefill block's), among those proved
    exact: numba's and float32 on a CPU, float32 on CUDA, and int8 where it passes ``self_test``.
    The kernels' speeds differ by far more than noise from one machine to the next: on an Ice
    Lake Xeon int8 is the fastest; on an AVX2-only AMD EPYC (Zen 3), where int8 fails its
    self-test, numba's tiles ran 65 to 121 GMAC/s at a layer's shapes and 256 rows, float32 19 to
    37 and int8 1.5 (its slow generic kernel). Under the AVX2 cap on the Xeon, float32 ran 2 to 3
    times as fast as numba's former kernel, row-by-column dot products (kernels revision 1).

    ``memo``, a folder, keeps the timings' winner for this machine, library and thread count
    (``_machine``), so that a start-up does not time the kernels again (0.2 s of it on an Ice Lake
    Xeon); int8 still passes its self-test in every process. The choice changes speed alone.

    ``LMZIP_GEMM`` names a kernel to use instead (``numba``, ``float32``; ``int8`` still has to
    pass the self-test): the results are the same integers, which the tests check.
    """
    portable = [Gemm(), Float32Gemm()] if device.type == "cpu" else [Float32Gemm()]
    forced = os.environ.get("LMZIP_GEMM", "auto")
    if forced != "auto":
        if forced not in KERNELS:
            raise ValueError(f"LMZIP_GEMM must be auto or one of {', '.join(KERNELS)}")
        kernel = KERNELS[forced]()
        return kernel if forced != "int8" or self_test(kernel, shapes, device) else portable[-1]
    entry = None if memo is None else memo / _machine(shapes, device, rows)
    known = entry.read_text() if entry is not None and entry.is_file() else None  # a torn write names no kernel
    if known in KERNELS and (known != "int8" or self_test(KERNELS[known](), shapes, device)):
        return KERNELS[known]()
    kernel = _fastest(portable, shapes, device, rows)
    if entry is not None:
        with contextlib.suppress(OSError):  # a read-only folder costs the next start-up its timings
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.write_text(kernel.name)
    return kernel


def _fastest(portable: list[Gemm], shapes: set[tuple[int, int]], device: torch.device, rows: int) -> Gemm:
    """``choose``'s timings: the fastest of ``portable`` and int8, int8 only where it passes ``self_test``."""
    kernels = portable + ([Int8Gemm()] if hasattr(torch, "_int_mm") else [])
    n, k = sorted(shapes, key=lambda s: s[0] * s[1])[len(shapes) // 2]  # a layer's, not the head's
    seconds: dict[str, float] = {}
    for kernel in kernels:
        best = min(seconds.values(), default=float("inf"))
        try:
            seconds[kernel.name] = _seconds(kernel, n, k, rows, device, within=50 * best + 0.05)
        except RuntimeError:  # no such kernel on this device or build
            continue
    for name in sorted(seconds, key=seconds.get):
        if name != "int8" or self_test(KERNELS[name](), shapes, device):
            return KERNELS[name]()
    return portable[-1]


def _machine(shapes: set[tuple[int, int]], device: torch.device, rows: int) -> str:
    """A name for what the kernels' speeds depend on: the kernels themselves, the processor (its LLVM
    name and features, or the GPU's name), torch's build, its CPU kernel class and caps, the threads
    and the shapes."""
    import llvmlite.binding as llvm

    cpu = (llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    caps = tuple(os.environ.get(v, "") for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"))
    key = repr((KERNELS_REVISION, cpu, gpu, str(device), torch.__version__, torch.backends.cpu.get_cpu_capability(),
                caps, torch.get_num_threads(), sorted(shapes), rows))
    return hashlib.sha256(key.encode()).hexdigest()[:32]
