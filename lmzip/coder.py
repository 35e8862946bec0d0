"""Range coder: integer (start, frequency) pairs in, bytes out, one independent stream per chunk.

A 64-bit range coder with byte-wise renormalisation. The interval is kept at 2^56 or more, so
with a frequency total of 2^precision (precision <= 32) the truncation of ``range / total``
costs at most 2^-24 of a bit a symbol. Carries are propagated into the bytes already written,
so the stream is a plain big-endian fraction in [0, 1): the decoder reads zeros past its end
and needs no length other than the symbol count. The encoder ends each stream on the shortest
nonzero fraction inside its final interval: stored to its last 1 bit (``bit_length``; the
container does), a stream costs the ideal sum of -log2(freq / total) plus at most two bits.

A decoder reads 8 bytes ahead of the encoder it mirrors, and every stream ends at least one byte
past the last byte its symbols pushed out, so a decoder never reads more than 7 bytes past a
stream's end. One that reaches ``OVERRUN_BYTES`` past it is decoding more symbols than the stream
holds (a damaged count or payload), and stops with a ChecksumError: a damaged chunk table costs
a few symbols of work, not the millions it may claim. (The margin past 7 admits the streams of
the first v5 encoder, which could end a byte or, rarely, a few zero bytes short of that.)

The interface is split, as in constriction: encoding consumes (start, freq) pairs; decoding
first asks for each stream's *target* in [0, total), lets the caller find the symbol whose
[start, start + freq) holds it (on the device, from the frequency table), then *consumes* that
pair. All kernels work on every stream of a batch in one call.
"""

from __future__ import annotations

import numba
import numpy as np

from .errors import ChecksumError

_TOP = np.uint64(1 << 56)
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
_U8 = np.uint64(8)
_U56 = np.uint64(56)
_MAX_PRECISION = 32
OVERRUN_BYTES = 16  # how far past a stream's end a decoder may read before it is overrun


def _check_precision(precision: int) -> np.uint64:
    if not 1 <= precision <= _MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{_MAX_PRECISION}, got {precision}")
    return np.uint64(precision)


@numba.njit(cache=True, nogil=True)
def _carry(out, pos):
    k = pos - 1
    while out[k] == 0xFF:
        out[k] = 0
        k -= 1
    out[k] += 1


@numba.njit(cache=True, nogil=True)
def _encode_rows(starts, freqs, lengths, precision, out, sizes):
    for row in range(starts.shape[0]):
        low = np.uint64(0)
        rng = _FULL
        pos = 0
        for i in range(lengths[row]):
            r = rng >> precision
            new = low + r * starts[row, i]
            if new < low:
                _carry(out[row], pos)
            low = new
            rng = r * freqs[row, i]
            while rng < _TOP:
                out[row, pos] = np.uint8(low >> _U56)
                pos += 1
                low = low << _U8
                rng = rng << _U8
        if lengths[row] > 0:
            pos = _finish(out[row], pos, low, rng)
        sizes[row] = pos


@numba.njit(cache=True, nogil=True)
def _finish(out, pos, low, rng):
    """End the stream on the point of [low, low + rng) with the most trailing zero bits that is
    not 0 (mod 2^64), written up to its last 1 bit (see ``bit_length``): the stream then holds at
    least one byte past the ``pos`` coded so far, which the decoder's overrun check relies on."""
    up = np.uint64(0)
    for k in range(63, -1, -1):
        step = np.uint64(1) << np.uint64(k)
        up = (np.uint64(0) - low) & (step - np.uint64(1))
        if low + up == 0:
            up += step
        if up < rng:
            break
    new = low + up
    if new < low:
        _carry(out, pos)
    while new:
        out[pos] = np.uint8(new >> _U56)
        pos += 1
        new = new << _U8
    return pos


def bit_length(stream: bytes) -> int:
    """Bits up to and including the stream's last 1 bit; the decoder reads zeros after them."""
    if not stream:
        return 0
    last = stream[-1]
    return 8 * len(stream) - ((last & -last).bit_length() - 1)


def encode(starts: np.ndarray, freqs: np.ndarray, lengths: np.ndarray, precision: int) -> list[bytes]:
    """Encode row ``b`` of ``starts``/``freqs`` (shape ``(B, L)``) up to ``lengths[b]``; one stream a row.

    Each pair must satisfy ``freq >= 1`` and ``start + freq <= 2**precision``. An empty row
    encodes to ``b""``.
    """
    p = _check_precision(precision)
    starts = np.ascontiguousarray(starts, dtype=np.uint64)
    freqs = np.ascontiguousarray(freqs, dtype=np.uint64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if starts.ndim != 2 or starts.shape != freqs.shape or lengths.shape != (starts.shape[0],):
        raise ValueError("starts and freqs must be (B, L) and lengths (B,)")
    # A symbol emits at most precision / 8 + 1 bytes; the end at most 8 more.
    out = np.zeros((starts.shape[0], starts.shape[1] * (precision // 8 + 1) + 8), dtype=np.uint8)
    sizes = np.zeros(starts.shape[0], dtype=np.int64)
    _encode_rows(starts, freqs, lengths, p, out, sizes)
    return [out[b, : sizes[b]].tobytes() for b in range(starts.shape[0])]


@numba.njit(cache=True, nogil=True)
def _next_byte(data, pos, end):
    if pos < end:
        return np.uint64(data[pos])
    return np.uint64(0)


@numba.njit(cache=True, nogil=True)
def _init_rows(data, begins, ends, value, rng, pos):
    for row in range(begins.shape[0]):
        v = np.uint64(0)
        p = begins[row]
        for _ in range(8):
            v = (v << _U8) | _next_byte(data, p, ends[row])
            p += 1
        value[row] = v
        rng[row] = _FULL
        pos[row] = p


@numba.njit(cache=True, nogil=True)
def _targets(value, rng, precision, active, out):
    last = (np.uint64(1) << precision) - np.uint64(1)
    for row in range(value.shape[0]):
        if active[row]:
            t = value[row] // (rng[row] >> precision)
            # Only a damaged stream lands past the total; clamp so the caller's lookup stays in range.
            out[row] = np.int64(min(t, last))
        else:
            out[row] = 0


@numba.njit(cache=True, nogil=True)
def _consume(value, rng, pos, data, ends, precision, starts, freqs, active):
    overrun = 0
    for row in range(value.shape[0]):
        if not active[row]:
            continue
        r = rng[row] >> precision
        v = value[row] - r * np.uint64(starts[row])
        g = r * np.uint64(freqs[row])
        p = pos[row]
        while g < _TOP:
            v = (v << _U8) | _next_byte(data, p, ends[row])
            p += 1
            g = g << _U8
        value[row] = v
        rng[row] = g
        pos[row] = p
        if p >= ends[row] + OVERRUN_BYTES:
            overrun += 1
    return overrun


class Decoder:
    """Decodes many independent streams in lockstep: ``targets()``, then ``consume(starts, freqs)``."""

    def __init__(self, streams: list[bytes], precision: int) -> None:
        self.precision = _check_precision(precision)
        self._data = np.frombuffer(b"".join(streams) or b"\0", dtype=np.uint8)
        sizes = np.array([len(s) for s in streams], dtype=np.int64)
        self._ends = np.cumsum(sizes)
        begins = self._ends - sizes
        n = len(streams)
        self._value = np.zeros(n, dtype=np.uint64)
        self._range = np.zeros(n, dtype=np.uint64)
        self._pos = np.zeros(n, dtype=np.int64)
        _init_rows(self._data, begins, self._ends, self._value, self._range, self._pos)

    def targets(self, active: np.ndarray) -> np.ndarray:
        """The value in ``[0, 2**precision)`` that names each active stream's next symbol."""
        out = np.empty(len(self._value), dtype=np.int64)
        _targets(self._value, self._range, self.precision, np.ascontiguousarray(active, dtype=np.bool_), out)
        return out

    def consume(self, starts: np.ndarray, freqs: np.ndarray, active: np.ndarray) -> None:
        """Remove the symbol ``[start, start + freq)`` that each active stream's target fell in;
        a ChecksumError if a stream is overrun (it holds fewer symbols than asked of it)."""
        overrun = _consume(
            self._value, self._range, self._pos, self._data, self._ends, self.precision,
            np.ascontiguousarray(starts, dtype=np.int64), np.ascontiguousarray(freqs, dtype=np.int64),
            np.ascontiguousarray(active, dtype=np.bool_),
        )
        if overrun:
            raise ChecksumError("damaged lmzip file: a chunk's payload ends before its tokens do")
