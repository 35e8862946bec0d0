"""Split input bytes into independent chunks: text for the model, everything else for zstd.

Text chunks hold about ``chunk_tokens`` tokens (by default ``chunk_length``: as long as
filling one batch allows) and must round-trip through the tokenizer exactly (``decode(encode(text)) == text``); the decoder turns each chunk's tokens
back into its UTF-8 bytes on its own. Bytes that are not UTF-8, short text islands between
them, and any text the tokenizer would alter become fallback chunks (zstd, or stored when zstd
does not help), so every input round-trips: binary and empty included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import zstandard

SEGMENT_CHARS = 1 << 18  # text is tokenised this much at a time to place the cuts
MIN_TEXT_BYTES = 64  # text islands shorter than this, between binary runs, go to the fallback
FALLBACK_BYTES = 1 << 20  # a fallback chunk holds at most this much input
ZSTD_LEVEL = 19
# Each text chunk starts from an empty context. SmolLM2-135M spends about 200 (prose) to 350
# (code, math, web) bits more on a chunk's first 256 tokens than deeper in a text, and little
# more after that (benchmarks/context-curve.md); the table costs about 10 bytes a chunk. So
# 2048-token chunks pay a few percent for their starts where 512-token chunks paid about 10%.
MIN_CHUNK_TOKENS = 2048
MAX_CHUNK_TOKENS = 1 << 15  # bounds a batch's token and interval buffers, whatever the input size
_ESCAPED = re.compile("[\udc80-\udcff]+")


class Kind(IntEnum):
    LM = 0
    ZSTD = 1
    STORED = 2


@dataclass
class Chunk:
    kind: Kind
    raw: bytes  # the original bytes this chunk restores
    tokens: list[int] | None = None  # for LM chunks
    payload: bytes = b""  # filled by the coder for LM chunks


def _runs(data: bytes) -> list[tuple[bool, bytes]]:
    """Maximal runs of (is_text, bytes), with short text islands merged into the binary runs."""
    text = data.decode("utf-8", errors="surrogateescape")
    runs: list[tuple[bool, bytes]] = []
    pos = 0
    for m in _ESCAPED.finditer(text):
        runs.append((True, text[pos : m.start()].encode("utf-8")))
        runs.append((False, m.group().encode("utf-8", errors="surrogateescape")))
        pos = m.end()
    runs.append((True, text[pos:].encode("utf-8")))
    merged: list[tuple[bool, bytes]] = []
    for is_text, raw in runs:
        if not raw:
            continue
        is_text = is_text and (len(raw) >= MIN_TEXT_BYTES or len(runs) == 1)
        if merged and merged[-1][0] == is_text:
            merged[-1] = (is_text, merged[-1][1] + raw)
        else:
            merged.append((is_text, raw))
    return merged


def fallback(raw: bytes) -> list[Chunk]:
    """zstd chunks, or stored ones where zstd would not shrink the bytes."""
    chunks = []
    for i in range(0, len(raw), FALLBACK_BYTES):
        piece = raw[i : i + FALLBACK_BYTES]
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(piece)
        if len(packed) < len(piece):
            chunks.append(Chunk(Kind.ZSTD, piece, payload=packed))
        else:
            chunks.append(Chunk(Kind.STORED, piece, payload=piece))
    return chunks


def frame_end(data: bytes | bytearray, limit: int) -> int:
    """Where a frame of at most ``limit`` bytes that starts ``data`` (longer than ``limit``) ends:
    after the last newline in the second half of its reach, else at the last place that splits
    no UTF-8 character. So frames cut text where a chunk boundary costs least, and the
    characters of the frames add up to the characters of the whole."""
    newline = data.rfind(b"\n", limit // 2, limit)
    if newline >= 0:
        return newline + 1
    for end in range(limit, limit - 4, -1):
        if not 0x80 <= data[end] <= 0xBF:  # not a continuation byte: a character starts here
            return end
    return limit


def chunk_length(total_tokens: int, rows: int) -> int:
    """The chunk length when none is given: as few chunks as fill one batch of ``rows``.

    Fewer, longer chunks cost fewer cold starts; more rows share each pass over the weights.
    So an input fills one batch when it can, with chunks of at least ``MIN_CHUNK_TOKENS``
    (small inputs run fewer rows) and at most ``MAX_CHUNK_TOKENS`` (large ones run more batches).
    """
    return min(max(-(-total_tokens // rows), MIN_CHUNK_TOKENS), MAX_CHUNK_TOKENS)


def _token_starts(text: str, tokenizer) -> np.ndarray:
    """Where each token of ``text`` starts (character offsets), tokenising it ``SEGMENT_CHARS`` at a
    time, each segment ending after a newline where it has one.

    The starts only place the cuts between chunks; each chunk is then tokenised on its own and
    checked (``_text_chunks``), so a segment boundary that tokenises a little differently moves a
    cut by a token and nothing else. Tokenised in one call, 5 MB of text held its whole Rust
    encoding at the compression's peak memory (benchmarks/memory.md)."""
    starts, a = [], 0
    while a < len(text):
        b = len(text) if len(text) - a <= SEGMENT_CHARS else text.rfind("\n", a, a + SEGMENT_CHARS) + 1
        b = b if b > a else a + SEGMENT_CHARS
        enc = tokenizer.backend_tokenizer.encode(text[a:b], add_special_tokens=False)
        starts.append(a + np.array([o[0] for o in enc.offsets], dtype=np.int64))
        a = b
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def _text_chunks(text: str, starts: np.ndarray, tokenizer, chunk_tokens: int) -> list[Chunk]:
    """``text`` cut where every ``chunk_tokens``-th token starts."""
    cuts = [0]
    for start in starts[chunk_tokens::chunk_tokens].tolist():
        if start > cuts[-1]:
            cuts.append(start)
    cuts.append(len(text))
    chunks: list[Chunk] = []
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        ids = tokenizer.encode(piece, add_special_tokens=False)
        raw = piece.encode("utf-8")
        if decode(tokenizer, ids) == piece:
            chunks.append(Chunk(Kind.LM, raw, tokens=ids))
        else:
            chunks.extend(fallback(raw))
    return chunks


def decode(tokenizer, ids: list[int]) -> str:
    """Token ids to text, exactly: no cleanup, special tokens kept."""
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def split(data: bytes, tokenizer, chunk_tokens: int | None = None, rows: int = 1) -> tuple[list[Chunk], int]:
    """Chunks, in order, whose ``raw`` bytes concatenate to ``data``, and the chunk length used.

    ``chunk_tokens=None`` picks ``chunk_length`` for the input's token count and ``rows``.
    """
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    runs = [(raw.decode("utf-8") if is_text else None, raw) for is_text, raw in _runs(data)]
    starts = [None if text is None else _token_starts(text, tokenizer) for text, _ in runs]
    length = chunk_tokens or chunk_length(sum(len(t) for t in starts if t is not None), rows)
    chunks: list[Chunk] = []
    for (text, raw), where in zip(runs, starts):
        chunks.extend(fallback(raw) if text is None else _text_chunks(text, where, tokenizer, length))
    return chunks, length
