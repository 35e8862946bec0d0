"""The integer engine: exact kernels, and tables that depend on nothing but the model and a row's tokens."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from lmzip import LMZip, exact, intmodel, mixer, predictor, quantize
from lmzip.quantize import int_frequencies, int_intervals, int_lookups

TEXT = ("Integer arithmetic is exact whatever the order of additions; the decoder agrees with the encoder. " * 12).encode()


# -- kernels against plain references ------------------------------------------------------------

def _cumulative(freqs: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((len(freqs), 1), np.int64), np.cumsum(freqs, axis=1)], axis=1)


@pytest.mark.parametrize("vocab", [7, 300, 49152])
def test_integer_tables_kernels_match_the_reference(vocab):
    rng = np.random.default_rng(vocab)
    logits = rng.integers(-40 << 12, 40 << 12, (9, vocab))
    logits[1] = 5  # all tied: the first symbol takes the remainder
    logits[2, ::3] = logits[2].max()  # ties at the top
    logits[3] = rng.integers(-(1 << 40), 1 << 40, vocab)  # far beyond the exp table
    table = intmodel._exp_table(30)
    for precision in (17, 30):
        if vocab > 1 << (precision - 1):
            continue
        freqs = int_frequencies(torch.from_numpy(logits), torch.from_numpy(table), precision)[0].numpy()
        assert (freqs >= 1).all() and (freqs.sum(axis=1) == 1 << precision).all()
        cum = _cumulative(freqs)
        tokens = rng.integers(0, vocab, len(logits))
        rows = np.arange(len(logits))
        targets = rng.integers(0, 1 << precision, len(logits))
        targets[0] = (1 << precision) + 5  # past the table (a damaged stream): the last symbol
        symbols = np.array([min(np.searchsorted(cum[r], targets[r], side="right") - 1, vocab - 1) for r in rows])
        outs = []
        for given in (logits, torch.from_numpy(logits)):  # numba on a CPU array; torch, as on a device
            pairs = int_intervals(given, tokens, table, precision)
            assert (pairs[:, 0] == cum[rows, tokens]).all() and (pairs[:, 1] == freqs[rows, tokens]).all()
            found = int_lookups(given, targets, table, precision)
            assert (found[:, 0] == symbols).all()
            assert (found[:, 1] == cum[rows, symbols]).all() and (found[:, 2] == freqs[rows, symbols]).all()
            outs.append(pairs)
        assert np.array_equal(outs[0], outs[1])  # P and sum(P) too


def test_floordiv_matches_python_integers():
    """The tables' division at its bounds: dividends up to 2**62, divisors up to 2**48 (a row's
    sum of P), quotients up to 2**30 (a table's budget), each just below, at and past a multiple."""
    rng = random.Random(6)
    cases = [(0, 1), (1, 1), ((1 << 62) - 1, 1 << 32), ((1 << 62) - 1, (1 << 48) - 1)]
    for _ in range(3000):
        w = rng.choice([rng.randrange(1, 1 << 48), rng.randrange(1, 1 << 20), (1 << 48) - rng.randrange(1, 9)])
        q = rng.randrange(0, min(1 << 30, ((1 << 62) - w) // w) + 1)
        cases += [(q * w + d, w) for d in (-1, 0, 1, w - 1) if 0 <= q * w + d < 1 << 62]
    assert [quantize.floordiv(a, w, 1.0 / w) for a, w in cases] == [a // w for a, w in cases]


def test_integer_helpers_match_python_integers():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 50), 1 << 50, 400)
    s = rng.integers(-8, 40, 400)
    got = intmodel.shift(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    want = [(int(a) + (1 << int(b) >> 1)) >> int(b) if b >= 0 else int(a) << int(-b) for a, b in zip(x, s)]
    assert got.tolist() == want
    v = np.concatenate([rng.integers(0, 1 << 62, 300), [0, 1, 2, 3, 4, (1 << 62) - 1]])
    import math
    assert intmodel.isqrt(torch.from_numpy(v)).tolist() == [math.isqrt(int(a)) for a in v]
    assert intmodel.bit_length(torch.from_numpy(np.abs(x))).tolist() == [int(abs(a)).bit_length() for a in x]


@pytest.mark.parametrize("k", [1536, 77])
def test_every_gemm_kernel_is_exact(k):
    """numba and float32 always; int8 wherever its self-test passes (it must fail nowhere
    silently). K = 1536 spans two of numba's int32 blocks, and the extreme rows overflow one;
    K = 77 leaves half a pair, and N = 300 part of a column tile; the rows fill numba's row
    tiles, or leave some over, or fill none; the multipliers reach their bound."""
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 128, (300, k)).astype(np.int8)
    q[0], q[1] = 127, -127
    mult = rng.integers(1, 1 << 15, 300)
    mult[:3] = (1 << 15) - 1
    kernels = [exact.Gemm(), exact.Float32Gemm()]
    if exact.self_test(exact.Int8Gemm(), {q.shape}, torch.device("cpu")):
        kernels.append(exact.Int8Gemm())
    for rows in (1, 3, 16, 37):
        m = rng.integers(-(1 << 14), (1 << 14) + 1, (rows, k))
        m[0], m[-1] = 1 << 14, -(1 << 14)
        want = ((m.astype(object) @ q.T.astype(object)) * mult.astype(object)).tolist()
        for kernel in kernels:
            got = kernel(torch.from_numpy(m), kernel.weight(q, torch.device("cpu")), torch.from_numpy(mult))
            assert got.numpy().tolist() == want, kernel.name


def test_choose_keeps_its_timings_but_not_its_proof(tmp_path, monkeypatch):
    """The timings' winner is kept for the next start-up, which times nothing; a torn or foreign
    entry is timed again; a kept int8 that fails its self-test here is not used."""
    shapes, cpu = {(64, 96), (300, 64)}, torch.device("cpu")
    monkeypatch.delenv("LMZIP_GEMM", raising=False)
    first = exact.choose(shapes, cpu, memo=tmp_path)
    (entry,) = tmp_path.iterdir()
    assert entry.read_text() == first.name

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(exact, "_seconds", no_timing)
    assert exact.choose(shapes, cpu, memo=tmp_path).name == first.name
    entry.write_text("int")  # torn
    with pytest.raises(AssertionError, match="timed again"):
        exact.choose(shapes, cpu, memo=tmp_path)
    entry.write_text("int8")
    monkeypatch.setattr(exact, "self_test", lambda *args: False)
    with pytest.raises(AssertionError, match="timed again"):
        exact.choose(shapes, cpu, memo=tmp_path)


# -- invariance ---------------------------------------------------------------------------------

def _gemma_module():
    config = transformers.Gemma3TextConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
        final_logit_softcapping=None, layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


def _logits(pred: predictor.Predictor, rows: np.ndarray, slots: int, block: int | None = None,
            revision: str = predictor.ENGINE) -> np.ndarray:
    """``(R, T, V)`` integer logits of token rows, fed in blocks of ``block`` (None: all at once),
    by the arithmetic of engine ``revision``."""
    cache = pred.start(len(rows), slots, revision)
    tokens = torch.from_numpy(rows)
    step = block or rows.shape[1]
    outs = []
    for a in range(0, rows.shape[1], step):
        m, e = pred.feed(cache, tokens[:, a : a + step])
        outs.append(pred.runner.logits(m.reshape(-1, m.shape[-1]), e.reshape(-1)).view(len(rows), -1, pred.model.vocab))
    return torch.cat(outs, 1).numpy()


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def pred(request, tiny_lm):
    if request.param == "llama":
        return tiny_lm.predictor()
    return predictor.build(_gemma_module(), torch.device("cpu"), start_token=0)


def test_a_rows_logits_ignore_the_batch_and_its_place(pred, revision):
    rng = np.random.default_rng(3)
    rows = rng.integers(0, pred.model.vocab, (5, 40))
    alone = _logits(pred, rows[2:3], slots=16, revision=revision)
    batch = _logits(pred, rows, slots=16, revision=revision)
    flipped = _logits(pred, rows[::-1].copy(), slots=16, revision=revision)
    assert np.array_equal(batch[2], alone[0]) and np.array_equal(flipped[2], alone[0])
    other = rows.copy()
    other[[0, 1, 3, 4]] = rng.integers(0, pred.model.vocab, (4, 40))
    assert np.array_equal(_logits(pred, other, slots=16, revision=revision)[2], alone[0])


def test_prefill_equals_stepping_across_many_window_moves(pred, revision):
    """70 tokens through 16 slots: the window moves every 7 tokens (int/3: every token); blocks of 1
    (the decoder), 5 and all."""
    rows = np.random.default_rng(4).integers(0, pred.model.vocab, (2, 70))
    whole = _logits(pred, rows, slots=16, revision=revision)
    assert np.array_equal(_logits(pred, rows, slots=16, block=1, revision=revision), whole)
    assert np.array_equal(_logits(pred, rows, slots=16, block=5, revision=revision), whole)


def test_revisions_compute_their_own_logits_from_their_own_caches(pred):
    """int/1 and int/2 differ only in the cache: int16 and int8 arrays, and other logits (an
    engine that ignored the revision would pass every other test of this module)."""
    rows = np.random.default_rng(4).integers(0, pred.model.vocab, (2, 30))
    caches = {r: pred.start(2, 16, r) for r in ("int/1", "int/2")}
    assert (caches["int/1"].k.dtype, caches["int/2"].k.dtype) == (torch.int16, torch.int8)
    for cache in caches.values():
        pred.feed(cache, torch.from_numpy(rows))
    assert caches["int/2"].v.abs().max() <= 127 < caches["int/1"].v.abs().max()
    assert not np.array_equal(_logits(pred, rows, 16, revision="int/1"), _logits(pred, rows, 16, revision="int/2"))


def test_int3_is_int2_with_a_window_that_keeps_seven_eighths(pred):
    """int/3 differs from int/2 in the window's moves alone: the same logits until the window first
    moves, other logits after it; a move keeps 7/8 of the slots (int/2: half), never all but one."""
    rows = np.random.default_rng(5).integers(0, pred.model.vocab, (2, 48))
    two, three = _logits(pred, rows, 32, revision="int/2"), _logits(pred, rows, 32, revision="int/3")
    assert np.array_equal(two[:, :32], three[:, :32]) and not np.array_equal(two[:, 32:], three[:, 32:])
    assert [pred.start(1, slots, "int/3").keep for slots in (3, 16, 512)] == [1, 14, 448]
    assert [pred.start(1, slots, "int/2").keep for slots in (3, 16, 512)] == [1, 8, 256]


def test_prefill_encoder_and_stepping_decoder_agree_on_rows_of_any_length(pred, revision):
    """Rows of 70, 9, 40, 1 and 0 tokens in one group: the shorter ones leave the encoder's block
    as they end, while the window moves; the decoder steps them at its own batch sizes."""
    rng = np.random.default_rng(8)
    rows = [rng.integers(0, pred.model.vocab, n).tolist() for n in (70, 9, 40, 1, 0)]
    done = pred.encode(rows, slots=16, precision=24, revision=revision)
    lengths = [len(r) for r in rows]
    assert pred.decode(done.payloads, lengths, slots=16, precision=24, revision=revision) == rows
    assert [pred.decode([p], [n], slots=16, precision=24, revision=revision)[0]
            for p, n in zip(done.payloads, lengths)] == rows


@pytest.mark.parametrize("mix", [None, *mixer.REVISIONS])
def test_the_device_path_writes_and_reads_the_cpu_path_files(pred, mix, revision):
    """The engine as it runs on a GPU (torch throughout, the logits kept where they are made, the
    mixer's statistics and the tables computed there), run here on the CPU: the same payloads as
    the numba path's, each decoded by the other, with each mixer and without."""
    device = predictor.Predictor(pred.model, torch.device("cpu"), pred.start_token)
    device.runner = intmodel.Runner(pred.model, exact.Float32Gemm(), torch.device("cpu"), fused=False,
                                    static=True)
    rng = np.random.default_rng(9)
    rows = [rng.integers(0, pred.model.vocab, n).tolist() for n in (60, 7, 33)]
    lengths = [len(r) for r in rows]
    done = pred.encode(rows, slots=16, precision=24, mix=mix, revision=revision)
    assert device.encode(rows, slots=16, precision=24, mix=mix, revision=revision).payloads == done.payloads
    assert device.decode(done.payloads, lengths, slots=16, precision=24, mix=mix, revision=revision) == rows


def test_rows_leaving_the_cache_free_each_array_as_its_copy_replaces_it(tiny_lm, monkeypatch):
    """The cache is the decoder's largest allocation: when rows leave, each old array must be free to
    go as soon as its copy replaces it, so the numpy views ``Cache.arrays`` keeps (which hold the
    arrays' memory) are dropped before any copy is made; held to the end, they kept the cache in
    memory twice over."""
    cache = tiny_lm.predictor().start(3, 16)
    cache.arrays(0)
    views_held = []
    real = torch.Tensor.contiguous
    monkeypatch.setattr(torch.Tensor, "contiguous",
                        lambda self, *a: views_held.append(cache._arrays is not None) or real(self, *a))
    cache.keep_rows(torch.tensor([2, 0]))
    assert views_held == [False] * len(intmodel.Cache.NAMES)
    assert cache.arrays(0)[0].shape[0] == 2 and np.array_equal(cache.arrays(0)[0], cache.k[0].numpy())


def test_static_attention_over_every_slot_equals_the_sliced(pred, revision):
    """A step with the shapes of a captured graph (every slot, masked) against the sliced one,
    across window moves, prefilled and stepped: the same integers."""
    rows = np.random.default_rng(10).integers(0, pred.model.vocab, (2, 50))
    sliced = predictor.Predictor(pred.model, torch.device("cpu"), pred.start_token)
    sliced.runner = intmodel.Runner(pred.model, exact.Float32Gemm(), torch.device("cpu"), fused=False, static=False)
    static = predictor.Predictor(pred.model, torch.device("cpu"), pred.start_token)
    static.runner = intmodel.Runner(pred.model, exact.Float32Gemm(), torch.device("cpu"), fused=False, static=True)
    want = _logits(sliced, rows, slots=16, revision=revision)
    assert np.array_equal(_logits(static, rows, slots=16, revision=revision), want)
    assert np.array_equal(_logits(static, rows, slots=16, block=1, revision=revision), want)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_thread_count_leaves_logits_unchanged(pred, threads):
    rows = np.random.default_rng(5).integers(0, pred.model.vocab, (3, 30))
    before = torch.get_num_threads()
    reference = _logits(pred, rows, slots=16)
    torch.set_num_threads(threads)
    try:
        assert np.array_equal(_logits(pred, rows, slots=16), reference)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kernel", [exact.Gemm, exact.Float32Gemm])
def test_gemm_kernel_leaves_logits_unchanged(tiny_lm, kernel):
    pred = tiny_lm.predictor()
    rows = np.random.default_rng(6).integers(0, pred.model.vocab, (3, 30))
    other = predictor.Predictor(pred.model, torch.device("cpu"), pred.start_token)
    other.runner = intmodel.Runner(pred.model, kernel(), torch.device("cpu"))
    assert np.array_equal(_logits(other, rows, slots=16), _logits(pred, rows, slots=16))


HASH_SCRIPT = """
import hashlib, sys, numpy as np, torch
from lmzip import models
sys.path.insert(0, {tests!r})
from test_intengine import _logits
lm = models.load({model!r}, device="cpu", dtype="float32")
pred = lm.predictor()
rows = np.random.default_rng(7).integers(0, pred.model.vocab, (3, 40))
print(pred.gemm.name, hashlib.sha256(_logits(pred, rows, slots=16).tobytes()).hexdigest())
"""

# Every kernel class this CPU has: a process told to use AVX512 on an AVX2-only CPU dies of SIGILL.
NATIVE = torch.backends.cpu.get_cpu_capability()
ENVIRONMENTS = [
    {"ATEN_CPU_CAPABILITY": "default"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    *([{"ATEN_CPU_CAPABILITY": "avx512"}] if NATIVE == "AVX512" else []),
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"LMZIP_GEMM": "numba"},
    {"LMZIP_GEMM": "float32"},
]


def test_cpu_kernel_class_leaves_logits_unchanged(tiny_model_dir, tiny_lm):
    """Each environment in a fresh process: the same logits, whichever kernels torch picked there."""
    pred = tiny_lm.predictor()
    rows = np.random.default_rng(7).integers(0, pred.model.vocab, (3, 40))
    want = hashlib.sha256(_logits(pred, rows, slots=16).tobytes()).hexdigest()
    script = HASH_SCRIPT.format(tests=os.path.dirname(__file__), model=str(tiny_model_dir))
    for extra in ENVIRONMENTS:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, **extra}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        kernel, got = done.stdout.split()[-2:]
        assert got == want, f"{extra} ({kernel} GEMM) computed other logits"


# -- files --------------------------------------------------------------------------------------

def test_files_decode_at_any_batch_size_and_thread_count(tiny_lm):
    blob = LMZip(tiny_lm, batch_size=4, chunk_tokens=40, context=24, threads=2).compress(TEXT)
    for batch_size, threads in [(1, 1), (3, 2), (16, 1)]:
        assert LMZip(tiny_lm, batch_size=batch_size, threads=threads).decompress(blob) == TEXT


def test_a_file_made_under_one_cpu_class_decodes_under_another(tiny_model_dir, tmp_path):
    """Compress in a process capped at AVX2 (portable GEMM), decompress here; and the reverse."""
    src = tmp_path / "in.txt"
    src.write_bytes(TEXT)
    capped = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    lmzip = [sys.executable, "-m", "lmzip"]
    common = ["-m", str(tiny_model_dir), "-q", "-f"]
    for enc_env, dec_env in [(capped, dict(os.environ)), (dict(os.environ), capped)]:
        packed, back = tmp_path / "in.lmz", tmp_path / "out.txt"
        run = subprocess.run([*lmzip, "compress", str(src), "-o", str(packed), "--chunk-tokens", "40",
                              "--context", "24", *common], env=enc_env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        run = subprocess.run([*lmzip, "decompress", str(packed), "-o", str(back), "--batch-size", "1",
                              "--threads", "1", *common], env=dec_env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert back.read_bytes() == TEXT


def test_integer_engine_files_record_no_environment(tiny_lm):
    from lmzip import container

    header = container.parse(LMZip(tiny_lm, chunk_tokens=40).compress(TEXT)).header
    assert "replay" not in header and header["coding"]["engine"] == predictor.ENGINE
    assert tiny_lm.integer_fingerprint.startswith(header["model"]["fingerprint"])  # the first 32 bits
    assert not tiny_lm.fingerprint.startswith(header["model"]["fingerprint"])


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_saved_model_loads_back_to_the_same_integers(tiny_lm, family, tmp_path):
    model = tiny_lm.predictor().model if family == "llama" else intmodel.IntModel.from_module(_gemma_module())
    model.save(tmp_path / "model.bin")
    back = intmodel.IntModel.load(tmp_path / "model.bin")
    assert back.fingerprint() == model.fingerprint() and back.config == model.config
    for (k, v), (k2, v2) in zip(sorted(model.arrays().items()), sorted(back.arrays().items())):
        assert k == k2 and type(v) is type(v2)
        assert np.array_equal(v, v2) and v.dtype == v2.dtype if isinstance(v, np.ndarray) else v == v2
