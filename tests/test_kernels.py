"""The numba kernels compute exactly the integers of the torch code they stand for."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from lmzip import exact, intmodel, kernels, predictor
from lmzip.intmodel import GATE_ONE, GATE_RANGE, GATE_X, ROPE_ONE

from test_intengine import _gemma_module, _logits  # noqa: E402  (tests/ is on sys.path)


def _rows(rng: np.random.Generator, shape: tuple[int, ...], top: int) -> np.ndarray:
    """Random int64 rows of mixed magnitude, with zero rows and rows at ``+-top``."""
    x = rng.integers(-top, top + 1, shape) >> rng.integers(0, 40, shape[:-1] + (1,))
    x.reshape(-1, shape[-1])[0] = 0
    x.reshape(-1, shape[-1])[1] = top
    x.reshape(-1, shape[-1])[2] = -top
    return x


@pytest.mark.parametrize("kv", [intmodel.KV16, intmodel.KV8], ids=["int16", "int8"])
def test_narrow_matches_the_torch_helper(kv):
    """Rows to a cache's mantissas, wide and narrow rows, where rounding reaches 2**bits (clamped
    for int8) and where it does not."""
    rng = np.random.default_rng(0)
    for top in (1 << 55, 1 << 14, 255, 100):
        x = _rows(rng, (21, 64), top)
        want = intmodel.narrow(torch.from_numpy(x), kv)
        got = kernels._narrow(x, (kv.bits, kv.top))
        assert np.array_equal(got[0], want[0].numpy()) and np.array_equal(got[1], want[1].numpy())
        assert np.abs(got[0]).max() <= kv.top and got[0].max() <= torch.iinfo(kv.dtype).max


def test_shift_rows_matches_the_torch_helper():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(_rows(rng, (4, 6, 32), 1 << 50))
    s = torch.from_numpy(rng.integers(-12, 70, (4, 6)))  # both signs, and past the 62-bit clamp
    assert torch.equal(kernels.shift_rows(x, s), intmodel.shift(x, s[..., None]))


@pytest.mark.parametrize("rows", [1, 8, 9, 40])
def test_halves_and_join_match_the_torch_code(rows):
    """The CPU's steps around ``torch._int_mm`` against the torch statements CUDA runs: mantissas
    at +-2**14 and at every low half's extremes, zero padding up to 17 rows, int32 and int64 products."""
    rng = np.random.default_rng(rows)
    m = torch.from_numpy(rng.integers(-(1 << 14), (1 << 14) + 1, (rows, 70)))
    m[0, :4] = torch.tensor([1 << 14, -(1 << 14), 127, -128])
    for pad in (0, 17):
        assert torch.equal(exact.halves(m, pad), exact.torch_halves(m, pad))
    mult = torch.from_numpy(rng.integers(1, 1 << 15, 50))
    for dtype, top in ((torch.int32, 1 << 30), (torch.int64, 1 << 40)):
        acc = torch.from_numpy(rng.integers(-top, top, (max(2 * rows, 17), 50))).to(dtype)
        assert torch.equal(exact.join(acc, rows, mult), exact.torch_join(acc, rows, mult))


@pytest.fixture(scope="module")
def runners(tiny_lm):
    model = tiny_lm.predictor().model
    gemm, cpu = exact.Gemm(), torch.device("cpu")
    return intmodel.Runner(model, gemm, cpu, fused=True), intmodel.Runner(model, gemm, cpu, fused=False)


def test_rmsnorm_matches_the_torch_code(runners):
    fused, plain = runners
    rng = np.random.default_rng(1)
    norm = fused.model.layers[0].attn_norm
    x = torch.from_numpy(_rows(rng, (40, norm.gain.shape[0]), 1 << 50))
    e = torch.from_numpy(rng.integers(-40, 10, 40))
    got, want = fused.rmsnorm(x, e, norm, "layers.0.attn_norm"), plain.rmsnorm(x, e, norm, "layers.0.attn_norm")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_swiglu_matches_the_torch_code(runners):
    fused, plain = runners
    rng = np.random.default_rng(2)
    g = torch.from_numpy(_rows(rng, (30, 128), 1 << 47))
    g[3, :5] = torch.tensor([0, 1, -1, GATE_RANGE << 40, -(GATE_RANGE << 40)])  # the table's ends and beyond
    eg = torch.from_numpy(rng.integers(-48, -20, 30))
    u = torch.from_numpy(_rows(rng, (30, 128), 1 << 50))
    got = kernels._swiglu(g.numpy(), eg.numpy(), u.numpy(), fused.model.gate_table, GATE_X, GATE_RANGE, GATE_ONE)
    for a, b in zip(got, plain.swiglu(g, eg, u)):
        assert np.array_equal(a, b.numpy())
    assert (GATE_X, GATE_RANGE, GATE_ONE) == (12, 16, 15)  # the grid the tables were built on


@pytest.mark.parametrize("kv", [intmodel.KV16, intmodel.KV8], ids=["int16", "int8"])
def test_rotate_matches_the_torch_code(runners, kv):
    fused, plain = runners
    rng = np.random.default_rng(3)
    d = fused.model.config.head_dim
    m = torch.from_numpy(_rows(rng, (2, 4, 9, d), 1 << 14))
    slots = torch.tensor([0, 1, 2, 7, 100, 511, 1000, 4000, 4095])
    got, want = fused.rotate(m, "full_attention", slots, kv), plain.rotate(m, "full_attention", slots, kv)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert ROPE_ONE == 14


def test_attention_quarters_match_the_torch_code_and_exact_rounding(runners):
    """``4 * num / total`` rounded half up, by a float64 reciprocal corrected in integers: against
    torch's floor division and Python's exact fractions, at the bounds (weighted values that are
    means of values up to 2**14 under totals of one weight to 4096 weights of 2**20, halves included)."""
    fused, plain = runners
    rng = np.random.default_rng(5)
    total = rng.integers(1, (1 << 32) + 1, (6, 500))
    total[0, :4] = [1, 2, 3, 1 << 32]
    mean = rng.integers(-(1 << 16), (1 << 16) + 1, total.shape + (64,))  # 4 * num / total, near 2**16 at most
    num = mean * total[..., None] // 4 + rng.integers(-3, 4, mean.shape)  # off the grid, and on it
    num[0, 0, :3] = [-(1 << 14), 1 << 14, 0]  # a single weight of 1: +-2**14 exactly
    num[1, 0, :2] = [(1 << 14) * total[1, 0], -(1 << 14) * total[1, 0]]
    got = fused.quarters(torch.from_numpy(num.astype(np.float64)), torch.from_numpy(total))
    assert torch.equal(got, plain.quarters(torch.from_numpy(num), torch.from_numpy(total)))
    flat_num, flat_total, flat_got = num.reshape(-1, 64), total.reshape(-1), got.numpy().reshape(-1, 64)
    for i in rng.choice(len(flat_total), 40, replace=False):
        for c in (0, 1, 63):
            want = math.floor(Fraction(4 * int(flat_num[i, c]), int(flat_total[i])) + Fraction(1, 2))
            assert flat_got[i, c] == want


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_fused_runner_computes_the_reference_logits(tiny_lm, family, revision):
    """The whole forward pass, prefilled and stepped, window moves included, against the torch
    code and the float32 GEMM (CUDA's path, run on the CPU): by whole-layer kernels (the numba
    GEMM), and by the same numba stages around another GEMM (``_cpu_layer``: prefill blocks, and
    the steps of more than ``whole_rows`` rows, which int8's takes)."""
    model = tiny_lm.predictor().model if family == "llama" else intmodel.IntModel.from_module(_gemma_module())
    cpu = torch.device("cpu")
    plain, whole, stepped, staged = (predictor.Predictor(model, cpu, start_token=0) for _ in range(4))
    plain.runner = intmodel.Runner(model, exact.Float32Gemm(), cpu, fused=False)
    whole.runner = intmodel.Runner(model, exact.Gemm(), cpu)
    stepped.runner = intmodel.Runner(model, exact.Float32Gemm(), cpu)
    stepped.runner.whole_rows = 0
    staged.runner = intmodel.Runner(model, exact.Float32Gemm(), cpu)
    assert whole.runner.fused and staged.runner.fused
    rows = np.random.default_rng(4).integers(0, model.vocab, (3, 40))
    want = _logits(plain, rows, slots=16, revision=revision)
    staged_steps = []  # tokens a row of each block
    stepped.runner._cpu_layer = lambda *a, f=stepped.runner._cpu_layer: staged_steps.append(a[2].shape[0] // a[3]) or f(*a)
    for pred in (whole, stepped, staged):
        assert np.array_equal(_logits(pred, rows, slots=16, revision=revision), want)  # blocks of 3 x 16 rows
        assert np.array_equal(_logits(pred, rows, slots=16, block=1, revision=revision), want)
    assert {1, 16} <= set(staged_steps)  # the stepped runner took that path for steps and for blocks


@pytest.mark.parametrize("window", [0, 700])
def test_attention_through_float64_gemms_is_exact_at_the_bounds(runners, window):
    """A prefill block's attention (float64 GEMMs around the numba softmax) against the integer
    loop kernel of a decoder step, over a full 4096-slot window: 2000 keys at +2**14 that the
    first head's queries (+2**14 too) score alike and highest, so that thousands of weights of
    2**20 meet values of up to 2**14 (sums near 2**45, far past float32's 2**24), and random
    keys beyond them whose scores need every bit (products of 2**28); with a sliding window too."""
    fused, _ = runners
    model, rng = fused.model, np.random.default_rng(6)
    c = model.config
    cache = intmodel.Cache(model, 2, intmodel.MAX_SLOTS, torch.device("cpu"), predictor.REVISIONS["int/1"])  # the widest
    top = 1 << 14
    k = rng.integers(-top, top + 1, cache.k[0].shape)  # (R, G, d, L)
    k[..., :2000] = top
    cache.k[0] = torch.from_numpy(k.astype(np.int16))
    cache.v[0] = torch.from_numpy(rng.integers(top // 2, top + 1, cache.v[0].shape).astype(np.int16))
    cache.ke[0], cache.ve[0] = -25, -25
    T = 12
    slots = torch.arange(intmodel.MAX_SLOTS - T, intmodel.MAX_SLOTS)
    q = torch.from_numpy(rng.integers(-top, top + 1, (2, c.heads, T, c.head_dim)))
    q[:, 0] = top
    eq = torch.from_numpy(rng.integers(-30, -20, (2, c.heads, T)))
    layer = model.layers[0]
    layer_kind, layer.kind = layer.kind, "sliding_attention" if window else layer.kind
    c.sliding_window, saved = window, c.sliding_window
    try:
        o, ref = fused._attend_block(0, layer, q, eq, cache, slots)
        want_o, want_ref = np.empty(q.shape, np.int64), np.empty(q.shape[:3], np.int64)
        mult, z = model.score
        kernels.attend(q.numpy(), eq.numpy(), cache.k[0].numpy(), cache.ke[0].numpy(), cache.v[0].numpy(),
                       cache.ve[0].numpy(), slots.numpy(), window, mult, z - intmodel.FS, model.att_exp, want_o, want_ref)
    finally:
        layer.kind, c.sliding_window = layer_kind, saved
    assert np.array_equal(o.reshape(want_o.shape).numpy(), want_o) and np.array_equal(ref.reshape(want_ref.shape).numpy(), want_ref)
    assert T >= fused.GEMM_QUERIES  # the engine takes this path for such a block


@pytest.mark.parametrize("window", [0, 700])
@pytest.mark.parametrize("T", [1, 12, 2 * kernels.QUERY_TOKENS + 22])
def test_tiled_attention_is_exact_at_the_bounds(runners, window, T):
    """The attention over an int8 cache through the GEMM's tiles, for a decoder step (T = 1) and
    prefill blocks (one pass of ``kernels.QUERY_TOKENS`` tokens, and three), against the integer
    loop kernel, over a full 4096-slot window: 2000 keys at +127 that the first head's queries
    (+2**14) score alike and highest, so that thousands of numerators of 2**20 (the high half at
    its largest) meet values of +-127, and random keys and values beyond them; with a sliding
    window too."""
    fused, _ = runners
    model, rng = fused.model, np.random.default_rng(8)
    c = model.config
    cache = intmodel.Cache(model, 2, intmodel.MAX_SLOTS, torch.device("cpu"), predictor.REVISIONS["int/3"])
    k = rng.integers(-127, 128, cache.k[0].shape)  # (R, G, d, L)
    k[..., :2000] = 127
    v = rng.integers(-127, 128, cache.v[0].shape)
    v[0] = 127
    v[1, :, :2000] = -127
    top = 1 << 14
    q = rng.integers(-top, top + 1, (2, c.heads, T, c.head_dim))
    q[:, 0] = top
    eq = rng.integers(-30, -20, (2, c.heads, T))
    ke, ve = rng.integers(-30, -20, cache.ke[0].shape).astype(np.int32), np.full(cache.ve[0].shape, -25, np.int32)
    ve[:, :, 3000:] = -26  # values at two exponents: numerators shifted to the query's
    slots = np.arange(intmodel.MAX_SLOTS - T, intmodel.MAX_SLOTS)
    mult, z = model.score
    args = (q, eq, k.astype(np.int8), ke, v.astype(np.int8), ve, slots, window, mult, z - intmodel.FS, model.att_exp)
    (o, ref), (want_o, want_ref) = ((np.empty(q.shape, np.int64), np.empty(q.shape[:3], np.int64)) for _ in range(2))
    kernels.attend_tiled(*args, o, ref)
    kernels.attend(*args, want_o, want_ref)
    assert np.array_equal(o, want_o) and np.array_equal(ref, want_ref)


def test_float64_gemms_of_attention_are_exact_at_their_bounds():
    """The products ``_attend_block`` hands to torch's float64 GEMM, at SmolLM2's head size and the
    longest window, with every operand at its extreme or random in full range: scores of 64
    products of 2**28 and weighted sums of 4096 products of 2**34 come out as the int64 ones."""
    rng, top = np.random.default_rng(7), 1 << 14
    q = rng.integers(-top, top + 1, (2, 3, 96, 64))
    k = rng.integers(-top, top + 1, (2, 3, intmodel.MAX_SLOTS, 64))
    q[0, 0], k[0, 0] = top, -top
    p = rng.integers(0, (1 << 20) + 1, (2, 3, 96, intmodel.MAX_SLOTS))
    p[1, 2] = 1 << 20
    v = rng.integers(-top, top + 1, (2, 3, intmodel.MAX_SLOTS, 64))
    v[1, 2] = top
    for a, b in ((q, k.swapaxes(-1, -2)), (p, v)):
        got = (torch.from_numpy(a).double() @ torch.from_numpy(b).double()).long().numpy()
        assert np.array_equal(got, np.einsum("rgik,rgkj->rgij", a, b))
