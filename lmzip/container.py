"""The .lmz container, format version 5 (specified in docs/FORMAT.md).

    magic (8) | version u16 | header length u32 | header | CRC32 of all before (u32)
    frames, each: varint chunk count (at least 1) | per chunk varint kind, tokens, raw length,
                  payload length in bits, and the CRC32 of the chunk's original bytes (u32) |
                  CRC32 of the table (u32) | payloads, concatenated bit by bit (most significant
                  first), zero-padded to a whole byte
    footer: varint 0 | varint size | varint characters | SHA-256 (32) | CRC32 of the footer (u32)

Frames, as zstd's blocks and xz's, let both ends stream: the encoder writes each frame once it
is coded, the decoder hands out each frame's bytes once its checksums pass, and neither holds
more than a frame. The header says only what is known before the input is read (the model, its
fingerprint and the coding); the footer holds the input's size and SHA-256.

Payloads are measured in bits because a range-coded chunk ends at its last 1 bit (the decoder
reads zeros after it): packing to the bit saves about 3.5 bits a chunk over byte alignment. The
padding bits must be zero, so that no bit of the file goes unchecked.

The header is JSON, raw-deflated against a fixed preset dictionary (``HEADER_DICTIONARY``,
which is part of the format): about 90 bytes instead of 300. ``check_header`` holds the one
schema every reader relies on.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .chunking import Kind
from .errors import ChecksumError, NotLmzipError, TruncatedError

MAGIC = b"\x89LMZ\r\n\x1a\n"
VERSION = 5
FRAME_BYTES = 1 << 22  # a frame restores at most this many bytes: what either end holds at once
_FIXED = struct.Struct("<8sHI")
_READ_BLOCK = 1 << 20  # a claimed length is read this much at a time, never allocated at once
HEADER_DICTIONARY = (
    b'"replay":{"cpu_capability":"AVX2","AVX512","device":"cpu","cuda","device_name":"NVIDIA ",'
    b'"engine":"lockstep-window-kv/4","threads":2,"torch":"2.13.0+cpu","transformers":"5.24.0"}}'
    b'"batch_size":48,"dtype":"float32","bfloat16",'
    b'{"coding":{"coder":"range64","context":512,"engine":"int/1",'
    b'"precision":30,"start_token":1},"model":{"fingerprint":"","name":"smollm2-135m","gemma3-270m",'
    b'"vocab":49152}}'
)

# The header's schema: every reader may rely on these fields and types. ``replay`` (and
# ``coding.batch_size``, ``coding.dtype``) appear in float-engine files only.
SCHEMA = {
    "model": {"name": str, "fingerprint": str, "vocab": int},
    "coding": {"engine": str, "coder": str, "precision": int, "context": int, "start_token": int},
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


def head_bytes(header: dict) -> bytes:
    """What a member starts with: magic, version, the packed header and its CRC."""
    body = pack_header(header)
    head = _FIXED.pack(MAGIC, VERSION, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


@dataclass
class Entry:
    """One chunk in a frame's table."""

    kind: Kind
    tokens: int
    raw_size: int
    payload_bits: int
    crc: int


@dataclass
class Frame:
    """Chunks coded together, with their table; ``payloads[i]`` holds at least ``entries[i].payload_bits``."""

    entries: list[Entry]
    payloads: list[bytes]

    @property
    def raw_size(self) -> int:
        return sum(e.raw_size for e in self.entries)

    def table_bytes(self, place: bytes) -> bytes:
        """The table and its CRC, which also covers ``place`` (``frame_place``): where it belongs."""
        table = bytearray(_varint(len(self.entries)))
        for e in self.entries:
            for v in (int(e.kind), e.tokens, e.raw_size, e.payload_bits):
                table += _varint(v)
            table += struct.pack("<I", e.crc)
        return bytes(table) + struct.pack("<I", zlib.crc32(table, zlib.crc32(place)))

    def payload_bytes(self) -> bytes:
        return _pack(self.payloads, [e.payload_bits for e in self.entries])

    def to_bytes(self, place: bytes) -> bytes:
        return self.table_bytes(place) + self.payload_bytes()


def frame_place(head: bytes, offset: int) -> bytes:
    """What a frame's table CRC covers besides the table: its member's header CRC (the last 4
    bytes of ``head``) and the input offset where the frame's bytes start. A frame moved to
    another place, or spliced in from another file, fails its own CRC before it is decoded."""
    return head[-4:] + struct.pack("<Q", offset)


@dataclass
class Footer:
    """The whole input of a member: its size in bytes and in characters, and its SHA-256 (hex)."""

    size: int
    characters: int
    sha256: str

    def to_bytes(self) -> bytes:
        body = _varint(0) + _varint(self.size) + _varint(self.characters) + bytes.fromhex(self.sha256)
        return body + struct.pack("<I", zlib.crc32(body))


@dataclass
class Archive:
    """One member read whole: header, frames and footer (``lmzip info``, tests)."""

    header: dict
    frames: list[Frame]
    footer: Footer

    @property
    def entries(self) -> list[Entry]:
        return [e for f in self.frames for e in f.entries]

    @property
    def payloads(self) -> list[bytes]:
        return [p for f in self.frames for p in f.payloads]

    def places(self) -> list[bytes]:
        head, offset, out = head_bytes(self.header), 0, []
        for f in self.frames:
            out.append(frame_place(head, offset))
            offset += f.raw_size
        return out

    @property
    def container_bytes(self) -> int:
        """Bytes spent on everything but the payloads."""
        return (len(head_bytes(self.header)) + sum(len(f.table_bytes(p)) for f, p in zip(self.frames, self.places()))
                + len(self.footer.to_bytes()))

    def to_bytes(self) -> bytes:
        return (head_bytes(self.header) + b"".join(f.to_bytes(p) for f, p in zip(self.frames, self.places()))
                + self.footer.to_bytes())


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


class _Source:
    """Exact reads from a binary stream: never past what is asked for, so a reader of one
    member leaves the stream at the next; ``record`` collects what a checksum covers."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.record = stream, None

    def take(self, n: int, what: str) -> bytes:
        parts, left = [], n
        while left:
            part = self.stream.read(min(left, _READ_BLOCK))
            if not part:
                raise TruncatedError(f"truncated lmzip file: it ends inside the {what}")
            parts.append(part)
            left -= len(part)
        out = b"".join(parts)
        if self.record is not None:
            self.record += out
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

    def crc(self, what: str, place: bytes = b"") -> None:
        """Read a CRC32 and check it against ``place`` and what was recorded since ``record`` was set."""
        covered, self.record = bytes(self.record), None
        (crc,) = struct.unpack("<I", self.take(4, what))
        if zlib.crc32(covered, zlib.crc32(place)) != crc:
            raise ChecksumError(f"damaged lmzip file: {what} checksum mismatch")


def read_header(stream: BinaryIO) -> dict:
    """The header of the member the stream is at, leaving it at the first frame; checks magic,
    version and header CRC."""
    return _read_head(stream)[0]


def _read_head(stream: BinaryIO) -> tuple[dict, bytes]:
    """The header, and the member's head bytes as read (magic to header CRC)."""
    src = _Source(stream)
    start = stream.read(len(MAGIC))
    if not start or not MAGIC.startswith(start[: len(MAGIC)]):
        raise NotLmzipError("not an lmzip file (bad magic)")
    src.record = bytearray(start)
    if len(start) < len(MAGIC):
        src.take(len(MAGIC) - len(start), "header")
    version, size = struct.unpack("<HI", src.take(6, "header"))
    if version != VERSION:
        raise NotLmzipError(f"lmzip format version {version} is not supported (this build reads {VERSION})")
    body = src.take(size, "header")
    head = bytes(src.record)
    src.crc("header")
    return check_header(unpack_header(body)), head + struct.pack("<I", zlib.crc32(head))


class Member:
    """One member being read from a stream: its header, then ``frames()`` one at a time, then
    ``footer`` (set once the frames are exhausted and their sizes add up to it)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.header, self._head = _read_head(stream)
        self.footer: Footer | None = None
        self._src = _Source(stream)

    def frames(self) -> Iterator[Frame]:
        src, size = self._src, 0
        while True:
            src.record = bytearray()
            count = src.varint("chunk table")
            if count == 0:
                self.footer = _read_footer(src, size)
                return
            frame = _read_frame(src, count, frame_place(self._head, size))
            size += frame.raw_size
            yield frame


def _read_frame(src: _Source, count: int, place: bytes) -> Frame:
    entries, size = [], 0
    for _ in range(count):
        kind, tokens, raw_size, payload_bits = (src.varint("chunk table") for _ in range(4))
        (crc,) = struct.unpack("<I", src.take(4, "chunk table"))
        if kind not in Kind._value2member_map_:
            raise ChecksumError(f"damaged lmzip file: unknown chunk kind {kind}")
        if kind == Kind.LM and tokens > raw_size:  # every token stands for at least one byte
            raise ChecksumError(f"damaged lmzip file: a chunk of {raw_size} bytes with {tokens} tokens")
        if kind != Kind.LM and payload_bits % 8:
            raise ChecksumError(f"damaged lmzip file: a {Kind(kind).name} chunk of {payload_bits} bits")
        entries.append(Entry(Kind(kind), tokens, raw_size, payload_bits, crc))
        size += raw_size
        if size > FRAME_BYTES:  # bounds a decoder's work and memory a frame
            raise ChecksumError(f"damaged lmzip file: a frame of more than {FRAME_BYTES} bytes")
    src.crc("chunk table", place)
    total = sum(e.payload_bits for e in entries)
    area = src.take(-(-total // 8), "payloads")
    if total % 8 and area[-1] & ((1 << (8 - total % 8)) - 1):
        raise ChecksumError("damaged lmzip file: the padding after a frame's last chunk is not zero")
    offsets = [0]
    for e in entries:
        offsets.append(offsets[-1] + e.payload_bits)
    return Frame(entries, [_unpack(area, offsets[i], e.payload_bits) for i, e in enumerate(entries)])


def _read_footer(src: _Source, size: int) -> Footer:
    footer = Footer(src.varint("footer"), src.varint("footer"), src.take(32, "footer").hex())
    src.crc("footer")
    if footer.size != size:
        raise ChecksumError("damaged lmzip file: the frames' sizes do not add up to the original size")
    return footer


def read_members(stream: BinaryIO) -> Iterator[Member]:
    """Every member of ``stream``, each to be read to its footer before the next: .lmz files
    concatenated (``cat a.lmz b.lmz``) decode as the concatenation of their contents, as gzip
    members do. Bytes after a member that do not start another one are damage, never ignored."""
    member = Member(stream)
    while True:
        yield member
        if member.footer is None:
            raise RuntimeError("a member's frames must be read before the next member")
        rest = stream.read(len(MAGIC))
        if not rest:
            return
        if not MAGIC.startswith(rest) or len(rest) < len(MAGIC):
            raise ChecksumError("damaged lmzip file: unexpected bytes after the last member")
        member = Member(_Prefixed(rest, stream))


class _Prefixed(io.RawIOBase):
    """``prefix``, then ``stream``: a member whose magic was read to see that it is one."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self.prefix, self.stream = prefix, stream

    def read(self, n: int = -1) -> bytes:
        if self.prefix:
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            return out
        return self.stream.read(n)


def members(blob: bytes) -> list[Archive]:
    """Every member of ``blob``, read whole; every structural check happens here, chunk CRCs and
    the SHA-256 at decode."""
    out = []
    for member in read_members(io.BytesIO(blob)):
        frames = list(member.frames())
        out.append(Archive(member.header, frames, member.footer))
    return out


def parse(blob: bytes) -> Archive:
    """A .lmz file of one member, read whole."""
    found = members(blob)
    if len(found) > 1:
        raise ChecksumError("damaged lmzip file: unexpected bytes after the last member")
    return found[0]

