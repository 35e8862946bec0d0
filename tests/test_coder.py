"""The numba range coder against the ideal bit count and against constriction."""

from __future__ import annotations

import constriction
import numpy as np
import pytest

from lmzip import coder
from lmzip.errors import ChecksumError


def random_tables(rng, steps: int, vocab: int, precision: int):
    """Peaked random integer tables (each >= 1, summing to 2**precision) and a symbol drawn from each."""
    probs = rng.dirichlet(np.full(vocab, 0.05), size=steps)
    freqs = np.floor(probs * ((1 << precision) - 2 * vocab)).astype(np.int64) + 1
    freqs[np.arange(steps), freqs.argmax(1)] += (1 << precision) - freqs.sum(1)
    cdf = np.cumsum(freqs, axis=1) - freqs
    symbols = np.array([rng.choice(vocab, p=f / f.sum()) for f in freqs])
    return freqs, cdf, symbols


def decode_all(streams, lengths, freqs_rows, cdf_rows, precision):
    """Drive the split interface: targets, a symbol lookup, then consume."""
    dec = coder.Decoder(streams, precision)
    steps = max(lengths)
    out = np.zeros((len(streams), steps), dtype=np.int64)
    for t in range(steps):
        active = t < np.array(lengths)
        target = dec.targets(active)
        sym = np.array([np.searchsorted(cdf_rows[b][t] + freqs_rows[b][t], target[b], side="right")
                        if active[b] else 0 for b in range(len(streams))])
        starts = np.array([cdf_rows[b][t][sym[b]] for b in range(len(streams))])
        fr = np.array([freqs_rows[b][t][sym[b]] for b in range(len(streams))])
        dec.consume(starts, fr, active)
        out[:, t] = sym
    return out


@pytest.mark.parametrize("precision", [16, 24, 32])
def test_round_trip_and_overhead_against_ideal(precision):
    rng = np.random.default_rng(precision)
    vocab, steps = 300, 3000
    lengths = [steps, steps - 17, 1, 0]
    tables = [random_tables(rng, steps, vocab, precision) for _ in lengths]
    starts = np.stack([c[np.arange(steps), s] for f, c, s in tables])
    freqs = np.stack([f[np.arange(steps), s] for f, c, s in tables])
    streams = coder.encode(starts, freqs, np.array(lengths), precision)
    assert streams[3] == b""
    for b, n in enumerate(lengths):
        ideal_bits = float(np.sum(precision - np.log2(freqs[b, :n].astype(np.float64))))
        # 0.01% of the ideal plus at most two bits to end the stream.
        assert coder.bit_length(streams[b]) <= ideal_bits * 1.0001 + 2
        assert coder.bit_length(streams[b]) >= ideal_bits - 16
    decoded = decode_all(streams, lengths, [t[0] for t in tables], [t[1] for t in tables], precision)
    for b, n in enumerate(lengths):
        assert np.array_equal(decoded[b, :n], tables[b][2][:n])


def test_streams_end_in_about_one_bit():
    """Many short streams, stored to their last 1 bit: none costs over its ideal plus two bits.

    Ending on the shortest fraction of the final interval often undercuts the ideal: bits the
    decoder reads as zeros past the end are free.
    """
    rng = np.random.default_rng(3)
    precision, rows, steps = 24, 400, 20
    tables = [random_tables(rng, steps, 50, precision) for _ in range(rows)]
    starts = np.stack([c[np.arange(steps), s] for f, c, s in tables])
    freqs = np.stack([f[np.arange(steps), s] for f, c, s in tables])
    streams = coder.encode(starts, freqs, np.full(rows, steps), precision)
    ideal = (precision - np.log2(freqs.astype(np.float64))).sum(axis=1)
    excess = np.array([coder.bit_length(s) for s in streams]) - ideal
    assert all(s == b"" or s[-1] != 0 for s in streams)  # no trailing zero bytes
    assert excess.max() <= 2 + 1e-9 and abs(excess.mean()) < 2, (excess.min(), excess.mean(), excess.max())
    decoded = decode_all(streams, [steps] * rows, [t[0] for t in tables], [t[1] for t in tables], precision)
    assert np.array_equal(decoded, np.stack([t[2] for t in tables]))


def test_bit_length():
    assert coder.bit_length(b"") == 0
    assert coder.bit_length(b"\x80") == 1
    assert coder.bit_length(b"\x01") == 8
    assert coder.bit_length(b"\xff\x04") == 14


def test_size_matches_constriction_range_coder():
    """Same symbols, same 24-bit tables: our stream and constriction's differ by a few bytes at most."""
    rng = np.random.default_rng(7)
    precision, vocab, steps = 24, 500, 4000
    freqs, cdf, symbols = random_tables(rng, steps, vocab, precision)
    ours = coder.encode(cdf[np.arange(steps), symbols][None], freqs[np.arange(steps), symbols][None],
                        np.array([steps]), precision)[0]
    encoder = constriction.stream.queue.RangeEncoder()
    for t in range(steps):
        model = constriction.stream.model.Categorical(freqs[t] / (1 << precision), perfect=False)
        encoder.encode(np.array([symbols[t]], dtype=np.int32), model)
    theirs = encoder.get_compressed().nbytes
    assert abs(len(ours) - theirs) <= 8, (len(ours), theirs)


def test_extreme_tables():
    """Probability-1 symbols cost almost nothing; probability 2^-32 symbols cost 32 bits; both decode."""
    precision, steps = 32, 500
    total = 1 << precision
    freqs_row = np.array([total - 2, 1, 1], dtype=np.int64)
    cdf_row = np.cumsum(freqs_row) - freqs_row
    symbols = np.array([0] * (steps // 2) + [1, 2] * (steps // 4))
    streams = coder.encode(cdf_row[symbols][None], freqs_row[symbols][None], np.array([steps]), precision)
    assert abs(8 * len(streams[0]) - 32 * (steps // 2)) <= 16
    decoded = decode_all(streams, [steps], [[freqs_row] * steps], [[cdf_row] * steps], precision)
    assert np.array_equal(decoded[0], symbols)


def test_damaged_stream_never_escapes_the_table():
    """Random bytes as a stream: targets stay in [0, total), so the caller's lookup cannot fail,
    and the decoder stops (overrun) once it reads OVERRUN_BYTES past the stream's end."""
    rng = np.random.default_rng(1)
    dec = coder.Decoder([rng.bytes(64)], 16)
    with pytest.raises(ChecksumError, match="payload ends before its tokens"):
        for step in range(200):
            t = dec.targets(np.array([True]))
            assert 0 <= t[0] < 1 << 16
            dec.consume(np.array([t[0]]), np.array([1]), np.array([True]))
    assert 8 + 2 * (step + 1) == 64 + coder.OVERRUN_BYTES  # 8 bytes read ahead, then 2 a symbol


def _finish_reference(prefix: bytes, low: int, rng: int) -> bytes:
    """The stream ``_finish`` must write: the point of [low, low + rng) with the most trailing zero
    bits that is not 0 mod 2^64 (the smallest such), carried into ``prefix``, to its last 1 bit."""
    for k in range(63, -1, -1):
        point = -(-low // (1 << k)) * (1 << k)
        if point % (1 << 64) == 0:
            point += 1 << k
        if point < low + rng:
            break
    value = (int.from_bytes(prefix, "big") << 64) + point
    return value.to_bytes(len(prefix) + 8, "big").rstrip(b"\0")


@pytest.mark.parametrize("low,rng", [
    (0, 1 << 56),  # nothing coded past zero: the point 0 is refused, 2^55 taken
    (0, (1 << 64) - 1),
    ((1 << 64) - (1 << 56), 1 << 56),  # the interval reaches 1.0: the carry point is refused
    ((1 << 64) - 5, (1 << 60)),  # the best point carries into the prefix's 0xFF bytes
    (0x0123456789ABCDEF, 1 << 57),
    (1, (1 << 56) + 3),
] + [(int(a), int(b)) for a, b in zip(np.random.default_rng(5).integers(0, 2**63, 40, dtype=np.uint64) * 2,
                                       np.random.default_rng(6).integers(2**56, 2**63, 40, dtype=np.uint64))])
def test_finish_matches_a_reference(low, rng):
    rng = min(rng, (1 << 64) - 1)
    prefix = b"\x12\xff\xff"
    out = np.zeros(len(prefix) + 8, dtype=np.uint8)
    out[: len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    pos = coder._finish(out, len(prefix), np.uint64(low), np.uint64(rng))
    written = out[:pos].tobytes()
    assert written == _finish_reference(prefix, low, rng)
    assert pos > len(prefix) and written[-1] != 0  # at least one byte past what was coded


@pytest.mark.parametrize("symbols", ["first", "last"])
def test_streams_pinned_to_an_end_of_the_table_decode_and_then_overrun(symbols):
    """Symbols always at start 0 leave the coder's low at 0, symbols always at the top push its
    interval against 1.0: the two places a shortest final point could be 0 mod 2^64, where the
    stream would end before its symbols did. Both decode to the count, and not one symbol past it."""
    precision, steps = 24, 300
    total = 1 << precision
    freqs_row = np.array([total // 3, total - 2 * (total // 3), total // 3], dtype=np.int64)
    cdf_row = np.cumsum(freqs_row) - freqs_row
    pick = 0 if symbols == "first" else 2
    streams = coder.encode(np.full((1, steps), cdf_row[pick]), np.full((1, steps), freqs_row[pick]),
                           np.array([steps]), precision)
    assert streams[0] and streams[0][-1] != 0
    decoded = decode_all(streams, [steps], [[freqs_row] * steps], [[cdf_row] * steps], precision)
    assert (decoded[0] == pick).all()
    dec = coder.Decoder(streams, precision)
    with pytest.raises(ChecksumError):
        for _ in range(steps + 90):  # 1.58 bits a symbol: 16 bytes of overrun within 82 more
            dec.targets(np.array([True]))
            dec.consume(np.array([cdf_row[pick]]), np.array([freqs_row[pick]]), np.array([True]))


def test_rejects_bad_precision():
    with pytest.raises(ValueError):
        coder.encode(np.zeros((1, 1)), np.ones((1, 1)), np.array([1]), 33)
