"""The .lmz container, format version 4 (specified in docs/FORMAT.md).

    magic (8) | version u16 | header length u32 | header | CRC32 of all before (u32)
    chunk table: varint count, then per chunk varint kind, tokens, raw length, payload length
                 in bits, and the CRC32 of the chunk's original bytes (u32) | CRC32 of the table (u32)
    payloads, concatenated bit by bit (most significant first), zero-padded to a whole byte;
    the padding bits must be zero, so that no bit of the file goes unchecked

Payloads are measured in bits because a range-coded chunk ends at its last 1 bit (the decoder
reads zeros after it): packing to the bit saves about 3.5 bits a chunk over byte alignment.

The header is JSON, raw-deflated against a fixed preset dictionary (``HEADER_DICTIONARY``,
which is part of the format): about 100 bytes instead of 430. It makes a file self-describing:
the model's name and fingerprint, the engine and every coding parameter (and, for the float
engine only, the environment the decoder must replay), and the original size and SHA-256.
``check_header`` holds the one schema every reader relies on.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from .chunking import Kind
from .errors import ChecksumError, NotLmzipError, TruncatedError

MAGIC = b"\x89LMZ\r\n\x1a\n"
VERSION = 4
_FIXED = struct.Struct("<8sHI")
HEADER_DICTIONARY = (
    b'"replay":{"cpu_capability":"AVX2","AVX512","device":"cpu","cuda","device_name":"NVIDIA ",'
    b'"engine":"lockstep-window-kv/4","threads":2,"torch":"2.13.0+cpu","transformers":"5.24.0"}}'
    b'"batch_size":48,"dtype":"float32","bfloat16",'
    b'{"coding":{"chunk_tokens":2048,"coder":"range64","context":512,"engine":"int/1",'
    b'"precision":30,"start_token":1},"model":{"fingerprint":"","name":"smollm2-135m","gemma3-270m",'
    b'"vocab":49152},"original":{"characters":,"sha256":"","size":}}'
)

# The header's schema: every reader may rely on these fields and types. ``replay`` (and
# ``coding.batch_size``, ``coding.dtype``) appear in float-engine files only.
SCHEMA = {
    "model": {"name": str, "fingerprint": str, "vocab": int},
    "coding": {"engine": str, "coder": str, "precision": int, "chunk_tokens": int, "context": int, "start_token": int},
    "original": {"size": int, "characters": int, "sha256": str},
}
FLOAT_SCHEMA = {"coding": {"batch_size": int, "dtype": str}, "replay": {"threads": int, "device": str}}


def check_header(header: object) -> dict:
    """``header`` if it has every field of ``SCHEMA`` with its type; else NotLmzipError naming the field."""
    def check(obj, schema, path):
        if not isinstance(obj, dict):
            raise NotLmzipError(f"not an lmzip file: header field '{path or 'header'}' is not an object")
        for key, kind in schema.items():
            where = f"{path}.{key}" if path else key
            if key not in obj:
                raise NotLmzipError(f"not an lmzip file: header field '{where}' is missing")
            if isinstance(kind, dict):
                check(obj[key], kind, where)
            elif not isinstance(obj[key], kind) or isinstance(obj[key], bool):
                raise NotLmzipError(f"not an lmzip file: header field '{where}' is not {kind.__name__}")

    check(header, SCHEMA, "")
    if "replay" in header:
        check(header, FLOAT_SCHEMA, "")
    return header


def pack_header(header: dict) -> bytes:
    """Compact, sorted JSON, raw-deflated against the preset dictionary."""
    body = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return packer.compress(body) + packer.flush()


def unpack_header(packed: bytes) -> dict:
    try:
        unpacker = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
        return json.loads(unpacker.decompress(packed) + unpacker.flush())
    except (zlib.error, ValueError) as exc:
        raise ChecksumError(f"damaged lmzip file: unreadable header ({exc})") from None


@dataclass
class Entry:
    """One chunk in the table."""

    kind: Kind
    tokens: int
    raw_size: int
    payload_bits: int
    crc: int


@dataclass
class Archive:
    header: dict
    entries: list[Entry]
    payloads: list[bytes] = field(default_factory=list)

    @property
    def container_bytes(self) -> int:
        """Bytes spent on everything but the payloads."""
        return len(self._head()) + len(self._table())

    def _head(self) -> bytes:
        body = pack_header(self.header)
        head = _FIXED.pack(MAGIC, VERSION, len(body)) + body
        return head + struct.pack("<I", zlib.crc32(head))

    def _table(self) -> bytes:
        table = bytearray(_varint(len(self.entries)))
        for e in self.entries:
            for v in (int(e.kind), e.tokens, e.raw_size, e.payload_bits):
                table += _varint(v)
            table += struct.pack("<I", e.crc)
        return bytes(table) + struct.pack("<I", zlib.crc32(table))

    def to_bytes(self) -> bytes:
        return self._head() + self._table() + _pack(self.payloads, [e.payload_bits for e in self.entries])


def _pack(payloads: list[bytes], bits: list[int]) -> bytes:
    """The first ``bits[i]`` bits of each payload, back to back, zero-padded to a whole byte."""
    out = bytearray()
    acc = held = 0  # bits not yet written out, and how many
    for payload, n in zip(payloads, bits):
        acc = (acc << n) | (int.from_bytes(payload, "big") >> (8 * len(payload) - n))
        held += n
        whole = held // 8
        out += (acc >> (held - 8 * whole)).to_bytes(whole, "big")
        held -= 8 * whole
        acc &= (1 << held) - 1
    if held:
        out += (acc << (8 - held)).to_bytes(1, "big")
    return bytes(out)


def _unpack(area: bytes, offset: int, n: int) -> bytes:
    """``n`` bits from bit ``offset`` of ``area``, left-aligned in whole bytes (zeros after them)."""
    first, end = offset // 8, -(-(offset + n) // 8)
    v = (int.from_bytes(area[first:end], "big") >> (8 * (end - first) - (offset - 8 * first) - n)) & ((1 << n) - 1)
    size = -(-n // 8)
    return (v << (8 * size - n)).to_bytes(size, "big")


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, blob: bytes, pos: int) -> None:
        self.blob, self.pos = blob, pos

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise TruncatedError(f"truncated lmzip file: it ends inside the {what}")
        out = self.blob[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        v = shift = 0
        while True:
            byte = self.take(1, what)[0]
            v |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return v
            if shift > 63:
                raise ChecksumError(f"damaged lmzip file: bad number in the {what}")


def read_header(blob: bytes, start: int = 0) -> tuple[dict, int]:
    """The header dict of the member at ``start`` and the offset of its chunk table; checks magic,
    version and header CRC."""
    if not blob.startswith(MAGIC[: min(len(blob) - start, len(MAGIC))], start) or len(blob) <= start:
        raise NotLmzipError("not an lmzip file (bad magic)")
    r = _Reader(blob, start)
    _, version, size = _FIXED.unpack(r.take(_FIXED.size, "header"))
    if version != VERSION:
        raise NotLmzipError(f"lmzip format version {version} is not supported (this build reads {VERSION})")
    body = r.take(size, "header")
    (crc,) = struct.unpack("<I", r.take(4, "header"))
    if zlib.crc32(blob[start : r.pos - 4]) != crc:
        raise ChecksumError("damaged lmzip file: header checksum mismatch")
    return check_header(unpack_header(body)), r.pos


def parse(blob: bytes) -> Archive:
    """Read a whole .lmz file of one member; every structural check happens here, chunk CRCs at decode."""
    archive, end = _parse_at(blob, 0)
    if end != len(blob):
        raise ChecksumError(f"damaged lmzip file: {len(blob) - end} unexpected bytes after the last chunk")
    return archive


def members(blob: bytes) -> list[Archive]:
    """Every member of ``blob``: .lmz files concatenated (``cat a.lmz b.lmz``) decode as the
    concatenation of their contents, as gzip members do. Bytes after a member that do not start
    another one are damage, never ignored."""
    out, pos = [], 0
    while True:
        archive, pos = _parse_at(blob, pos)
        out.append(archive)
        if pos == len(blob):
            return out
        if not blob.startswith(MAGIC, pos):
            raise ChecksumError(f"damaged lmzip file: {len(blob) - pos} unexpected bytes after the last chunk")


def _parse_at(blob: bytes, start: int) -> tuple[Archive, int]:
    """The member starting at ``start``, and where it ends."""
    header, pos = read_header(blob, start)
    r = _Reader(blob, pos)
    entries = []
    for _ in range(r.varint("chunk table")):
        kind, tokens, raw_size, payload_bits = (r.varint("chunk table") for _ in range(4))
        (crc,) = struct.unpack("<I", r.take(4, "chunk table"))
        if kind not in Kind._value2member_map_:
            raise ChecksumError(f"damaged lmzip file: unknown chunk kind {kind}")
        if kind == Kind.LM and tokens > raw_size:  # every token stands for at least one byte
            raise ChecksumError(f"damaged lmzip file: a chunk of {raw_size} bytes with {tokens} tokens")
        if kind != Kind.LM and payload_bits % 8:
            raise ChecksumError(f"damaged lmzip file: a {Kind(kind).name} chunk of {payload_bits} bits")
        entries.append(Entry(Kind(kind), tokens, raw_size, payload_bits, crc))
    (crc,) = struct.unpack("<I", r.take(4, "chunk table"))
    if zlib.crc32(blob[pos : r.pos - 4]) != crc:
        raise ChecksumError("damaged lmzip file: chunk table checksum mismatch")
    total = sum(e.payload_bits for e in entries)
    area = r.take(-(-total // 8), "payloads")
    if total % 8 and area[-1] & ((1 << (8 - total % 8)) - 1):
        raise ChecksumError("damaged lmzip file: the padding after the last chunk is not zero")
    offsets = [0]
    for e in entries:
        offsets.append(offsets[-1] + e.payload_bits)
    payloads = [_unpack(area, offsets[i], e.payload_bits) for i, e in enumerate(entries)]
    if sum(e.raw_size for e in entries) != header["original"]["size"]:
        raise ChecksumError("damaged lmzip file: chunk sizes do not add up to the original size")
    return Archive(header, entries, payloads), r.pos
