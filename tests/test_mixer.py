"""The mixer's numba kernels against a plain-Python statement of the same arithmetic, and what mixing buys."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lmzip import intmodel, mixer
from lmzip.mixer import CLAMP, FS, ONE
from lmzip.quantize import int_intervals

EXP = intmodel._exp_table(30)


class Reference:
    """One row of the mixer in Python ints, dicts and lists, written from the module's docstrings."""

    def __init__(self, vocab: int, revision: str) -> None:
        self.bias = None if revision == "mix/1" else [0] * vocab
        self.gated = revision == "mix/3"
        self.hist: list[int] = []
        self.match: dict[int, int] = {}
        self.order2: dict[int, tuple[int, int]] = {}  # slot -> (token, count)
        self.ptr = self.length = 0
        self.hits = {("match", b): ONE // 2 for b in range(9)} | {("order2", b): ONE // 2 for b in range(5)}
        self.weights = [list(mixer.INITIAL_WEIGHTS) for _ in range(1 if self.gated else mixer.SETS)]
        self.pending: list[tuple[int, int, int, list[int]]] = []

    @staticmethod
    def ln(x: int) -> int:
        e = x.bit_length() - 1
        return int(mixer.LN_POW[e]) + int(mixer.LN_MANT[((x << 12) >> e) % 4096])

    def odds(self, part: int, whole: int) -> int:
        if part <= 0:
            return -CLAMP
        if part >= whole:
            return CLAMP
        return max(-CLAMP, min(CLAMP, self.ln(part) - self.ln(whole - part)))

    @staticmethod
    def squash(s: int) -> int:
        i, frac = divmod(s + CLAMP, 64)
        lo, hi = int(mixer.SQUASH[i]), int(mixer.SQUASH[i + 1])
        return lo + (hi - lo) * frac // 64

    def slot(self, n: int, order: int) -> int:
        h = 0x5BD1E995 + order
        for t in self.hist[n - order : n]:
            h = ((h ^ t) * 0x2545F491) % 2**32
        return h >> (32 - mixer.TABLE_BITS)

    @staticmethod
    def bucket(length: int) -> int:
        return sum(length >= b for b in (3, 4, 5, 7, 10, 15, 23, 32))

    @staticmethod
    def table(row: list[int]) -> tuple[int, int]:
        """The max and sum(P) of a row."""
        best = max(row)
        return best, sum(int(EXP[min(best - v, len(EXP) - 1)]) for v in row)

    def adapt(self, row: list[int]) -> None:
        """mix/2 and mix/3: add the bias, and note the likeliest tokens, the widest span of 5 nats halved
        until it holds at most 32 (the first 32 by id should span 0 hold more)."""
        for v, b in enumerate(self.bias):
            row[v] += b
        best, whole = self.table(row)
        span = mixer.BIAS_SPAN
        while sum(v >= best - span for v in row) > mixer.BIAS_TOP and span > 0:
            span >>= 1
        likely = [v for v in range(len(row)) if row[v] >= best - span][: mixer.BIAS_TOP]
        self.likely = whole, [(v, int(EXP[best - row[v]])) for v in likely]

    def mix(self, row: list[int]) -> tuple[int, int]:
        """Bias ``row`` in place; the model's max and sum(P), before any bias."""
        alone = self.table(row)
        if self.bias is not None:
            self.adapt(row)
        n = len(self.hist)
        cm, mb = (self.hist[self.ptr], self.bucket(self.length)) if self.length else (-1, 0)
        co, ob = -1, 0
        if n >= 2 and self.slot(n, 2) in self.order2:
            co, count = self.order2[self.slot(n, 2)]
            ob = count + 1
        self.proposal = cm, mb, co, ob
        xm = self.odds(self.hits["match", mb], ONE) if cm >= 0 else 0
        xo = self.odds(self.hits["order2", ob], ONE) if co >= 0 else 0
        base = (mb * 5 + ob) * 3
        cands = []  # (token, weight set, the match model's input, the order-2 model's)
        if cm >= 0:  # mix/3: a model's input only for its own token, one weight set
            cands.append((cm, 0, xm, xo if co == cm else 0) if self.gated else
                         (cm, base + (0 if co in (-1, cm) else 1), xm, xo))
        if co >= 0 and co != cm:
            cands.append((co, 0, 0, xo) if self.gated else (co, base + 2, xm, xo))
        best, whole = self.table(row)
        big = len(EXP) - 1
        self.pending, biases = [], []
        for token, s, x_match, x_order2 in cands:
            x = [self.odds(int(EXP[min(best - row[token], big)]), whole), x_match, x_order2, 1 << FS]
            mixed = max(-CLAMP, min(CLAMP, sum(w * v for w, v in zip(self.weights[s], x)) >> 16))
            self.pending.append((token, s, self.squash(mixed), x))
            biases.append((token, mixed - x[0]))
        for token, b in biases:
            row[token] += b
        return alone

    def learn(self, y: int) -> None:
        if self.bias is not None:  # a step down the log loss's gradient
            whole, likely = self.likely
            for v, p in likely:
                self.bias[v] = max(self.bias[v] - mixer.BIAS_RATE * p // whole, -mixer.BIAS_CLAMP)
            self.bias[y] = min(self.bias[y] + mixer.BIAS_RATE, mixer.BIAS_CLAMP)
        for token, s, p, x in self.pending:
            err = (ONE if y == token else 0) - p
            self.weights[s] = [max(-16 * ONE, min(16 * ONE, w + ((err * v) >> 16))) for w, v in zip(self.weights[s], x)]
        cm, mb, co, ob = self.proposal
        for model, cand, b in (("match", cm, mb), ("order2", co, ob)):
            if cand >= 0:
                self.hits[model, b] += ((ONE if y == cand else 0) - self.hits[model, b]) >> 5
        self.hist.append(y)
        n = len(self.hist)
        if self.length:
            self.ptr, self.length = (self.ptr + 1, min(self.length + 1, 1 << 16)) if cm == y else (self.ptr, 0)
        if n >= 3:
            s = self.slot(n, 3)
            if not self.length and s in self.match:
                at = self.match[s]
                found = 0
                while found < 32 and found < at and self.hist[at - 1 - found] == self.hist[n - 1 - found]:
                    found += 1
                if found >= 3:
                    self.ptr, self.length = at, found
            self.match[s] = n
            s = self.slot(n - 1, 2)
            token, count = self.order2.get(s, (-1, 0))
            self.order2[s] = (y, min(count + 1, 3)) if token == y else (y, 0)


def _stream(rng: np.random.Generator, vocab: int, n: int) -> np.ndarray:
    """Tokens with repeats at every scale: copied spans of the stream's own past, and fresh noise."""
    out: list[int] = []
    while len(out) < n:
        if out and rng.random() < 0.6:
            a = int(rng.integers(0, len(out)))
            out += out[a : a + int(rng.integers(2, 40))]
        else:
            out += rng.integers(0, vocab, int(rng.integers(1, 8))).tolist()
    return np.array(out[:n], dtype=np.int64)


def _logits(rng: np.random.Generator, n: int, vocab: int) -> np.ndarray:
    # spread wide enough that some tokens fall off the exp table (P = 0) and some rows are nearly one-hot
    return (rng.integers(-60_000, 0, (n, vocab)) * rng.random((n, 1)) ** 2).astype(np.int64)


def test_the_tables_are_pinned() -> None:
    """The tables are part of the format: a build that computes them otherwise writes other files."""
    digest = hashlib.sha256(b"".join(t.astype("<i8").tobytes() for t in (mixer.LN_MANT, mixer.LN_POW, mixer.SQUASH)))
    assert digest.hexdigest()[:16] == "0f5215bdc1f87efb" == mixer.TABLES_SHA256
    assert mixer.SQUASH[0] == 22 and mixer.SQUASH[512] == ONE // 2 and mixer.LN_POW[1] == 2839  # e^-8, 1/2, ln 2


@pytest.mark.parametrize("revision", mixer.REVISIONS)
@pytest.mark.parametrize("seed", range(3))
def test_encoder_kernel_matches_the_reference(seed: int, revision: str) -> None:
    rng = np.random.default_rng(seed)
    vocab, rows, n = 300, 3, 400
    streams = [_stream(rng, vocab, n) for _ in range(rows)]
    logits = _logits(rng, rows * n, vocab)
    # tokens interleaved across rows as the encoder's blocks are, each row's in order
    order = sorted(range(rows * n), key=lambda i: (i % n // 50, i // n, i % n))
    row_of = np.array([i // n for i in order]), np.array([i % n for i in order])
    tokens = np.array([streams[r][t] for r, t in zip(*row_of)])
    got_logits = logits[order].copy()
    state = mixer.State.fresh(rows, n, vocab, revision)
    got = mixer.observe(state, got_logits, row_of[0], tokens, EXP)
    refs = [Reference(vocab, revision) for _ in range(rows)]
    for k, (r, t) in enumerate(zip(*row_of)):
        row = logits[order[k]].tolist()
        best, whole = refs[r].mix(row)
        assert row == got_logits[k].tolist(), f"row {r} token {t}"
        assert (int(EXP[min(best - logits[order[k], tokens[k]], len(EXP) - 1)]), whole) == tuple(got[k])
        refs[r].learn(int(tokens[k]))
    for r, ref in enumerate(refs):
        assert [int(w) for w in state.weights[r].ravel()] == [w for ws in ref.weights for w in ws]
        assert (ref.ptr, ref.length) == tuple(state.where[r, 1:])
        assert state.bias[r].tolist() == (ref.bias or [])
    assert revision == "mix/1" or np.abs(state.bias).max() > 0


@pytest.mark.parametrize("revision", mixer.REVISIONS)
def test_decoder_kernels_give_the_encoders_biases(revision: str) -> None:
    rng = np.random.default_rng(7)
    vocab, rows, n = 200, 4, 300
    streams = np.stack([_stream(rng, vocab, n) for _ in range(rows)])
    logits = _logits(rng, rows * n, vocab).reshape(rows, n, vocab)
    encoded = logits.copy()
    enc = mixer.State.fresh(rows, n, vocab, revision)
    for t in range(n):
        mixer.observe(enc, encoded[:, t], np.arange(rows), streams[:, t], EXP)
    dec, decoded = mixer.State.fresh(rows, n, vocab, revision), logits.copy()
    for t in range(n):
        alive = np.arange(rows) if t < n // 2 else np.array([0, 2])  # rows leave the batch, as they end
        step = np.ascontiguousarray(decoded[alive, t])
        mixer.predict(dec, step, alive, EXP)
        decoded[alive, t] = step
        mixer.learn(dec, alive, streams[alive, t])
    assert np.array_equal(decoded[[0, 2]], encoded[[0, 2]])
    assert np.array_equal(decoded[:, : n // 2], encoded[:, : n // 2])


@pytest.mark.parametrize("revision", mixer.REVISIONS)
def test_logits_on_a_device_mix_as_the_cpu_kernels_mix_them(revision: str) -> None:
    """The mixer's statistics and biases computed with torch where the logits lie (a GPU's path,
    run here on CPU tensors) are the numba kernels' integers, encoding and decoding."""
    rng = np.random.default_rng(11)
    vocab, rows, n = 250, 3, 200
    streams = np.stack([_stream(rng, vocab, n) for _ in range(rows)])
    logits = _logits(rng, rows * n, vocab).reshape(rows, n, vocab)
    order = np.repeat(np.arange(rows), n)
    tokens = streams.reshape(-1)
    states, mixed, seen = [], [], []
    for as_tensor in (False, True):
        state, rows_logits = mixer.State.fresh(rows, n, vocab, revision), logits.reshape(-1, vocab).copy()
        given = torch.from_numpy(rows_logits) if as_tensor else rows_logits  # shares its memory
        seen.append(mixer.observe(state, given, order, tokens, EXP))
        states.append(state)
        mixed.append(rows_logits)
    assert np.array_equal(seen[0], seen[1]) and np.array_equal(mixed[0], mixed[1])
    assert np.array_equal(states[0].weights, states[1].weights)
    decoded = []
    for as_tensor in (False, True):
        state, out = mixer.State.fresh(rows, n, vocab, revision), logits.copy()
        for t in range(n):
            step = np.ascontiguousarray(out[:, t])
            mixer.predict(state, torch.from_numpy(step) if as_tensor else step, np.arange(rows), EXP)
            out[:, t] = step
            mixer.learn(state, np.arange(rows), streams[:, t])
        decoded.append(out)
    assert np.array_equal(decoded[0], decoded[1])
    assert np.array_equal(decoded[0].reshape(-1, vocab), mixed[0])


def test_mixing_saves_bits_on_repeated_text() -> None:
    """On a stream that repeats itself, with a model that knows nothing, the match model's tokens
    cost a fraction of the model's: measured by the coder's own intervals, mixed and not."""
    rng = np.random.default_rng(3)
    vocab, n = 1000, 2000
    tokens = np.tile(rng.integers(0, vocab, 250), n // 250)
    logits = _logits(rng, n, vocab) // 8  # a weak, random model
    plain = int_intervals(logits, tokens, EXP, 24)
    mixed_logits = logits.copy()
    mixer.observe(mixer.State.fresh(1, n, vocab), mixed_logits, np.zeros(n, dtype=np.int64), tokens, EXP)
    mixed = int_intervals(mixed_logits, tokens, EXP, 24)
    bits = lambda iv: float((24 - np.log2(iv[:, 1])).sum())  # noqa: E731
    first = int_intervals(logits[:250], tokens[:250], EXP, 24)
    assert bits(mixed) < 0.25 * bits(plain)
    assert bits(mixed) > bits(first) * 0.9  # the first pass has nothing to remember: it still costs its bits


def test_a_row_with_one_possible_token_stays_finite() -> None:
    """Log-odds of a certain or impossible token are clamped, so the biases stay bounded."""
    vocab, n = 16, 64
    tokens = np.zeros(n, dtype=np.int64)
    logits = np.full((n, vocab), -10**9, dtype=np.int64)
    logits[:, 0] = 0
    mixer.observe(mixer.State.fresh(1, n, vocab), logits, np.zeros(n, dtype=np.int64), tokens, EXP)
    assert np.abs(logits[:, 0]).max() <= 2 * CLAMP + mixer.BIAS_CLAMP


def test_the_adaptive_bias_learns_a_documents_vocabulary() -> None:
    """A stream drawn from a few tokens of a large vocabulary, in no repeated order, under a model
    that spreads itself over all of them: the match and order-2 models find little, the bias
    (mix/2, mix/3) learns which tokens the document uses. Measured by the coder's own intervals."""
    rng = np.random.default_rng(5)
    vocab, n = 2000, 1500
    used = rng.choice(vocab, 40, replace=False)
    tokens = used[np.minimum(rng.zipf(1.3, n), 40) - 1]
    logits = _logits(rng, n, vocab) // 16  # flat: every token within a few nats
    bits = {}
    for revision in mixer.REVISIONS:
        mixed = logits.copy()
        mixer.observe(mixer.State.fresh(1, n, vocab, revision), mixed, np.zeros(n, dtype=np.int64), tokens, EXP)
        bits[revision] = float((24 - np.log2(int_intervals(mixed, tokens, EXP, 24)[:, 1])).sum())
    plain = float((24 - np.log2(int_intervals(logits, tokens, EXP, 24)[:, 1])).sum())
    assert max(bits["mix/2"], bits["mix/3"]) < 0.7 * bits["mix/1"] and bits["mix/1"] < plain
