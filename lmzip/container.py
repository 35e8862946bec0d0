"""The .lmz container, format version 10 (specified in docs/FORMAT.md); versions 5 to 9 are read too.

    magic (4) | version u8 | varint header length | header | CRC32 of all before (u32)
    frames, each: varint chunk count (at least 1) | per chunk varint tokens << 2 | kind, raw
                  length and payload length in bits, and the CRC32 of the chunk's original bytes
                  (u32) | CRC32 of the table (u32) | payloads, concatenated bit by bit (most
                  significant first), zero-padded to a whole byte
    footer: varint 0 | varint size | varint size - characters | CRC32 (u32) of the footer's numbers,
            started from the CRC32 of the whole input

Frames, as zstd's blocks and xz's, let both ends stream: the encoder writes each frame once it
is coded, the decoder hands out each frame's bytes once its checksums pass, and neither holds
more than a frame. The header says only what is known before the input is read (the model, its
fingerprint and the coding); the footer holds the input's size and a checksum of all of it.

Payloads are measured in bits because a range-coded chunk ends at its last 1 bit (the decoder
reads zeros after it): packing to the bit saves about 3.5 bits a chunk over byte alignment. The
padding bits must be zero, so that no bit of the file goes unchecked.

The header is a few tagged binary fields (``FIELDS``); a field equal to its default is left out,
so a file made with the defaults spends 5 bytes on it, and a one-chunk text file about 39 on
the whole container. The defaults belong to the format version: version 9 is version 10 with
``coding.mixer`` defaulting to mix/2; version 8 is version 9 with ``coding.engine`` defaulting
to int/2; version 7 is version 8 with ``coding.mixer`` defaulting to mix/1; version 6 is version
7 with ``coding.engine`` defaulting to int/1, a length before the fingerprint, and the character
count itself in the footer, where v7 counts the bytes that are not a character's first (0 for
ASCII, so one byte). ``check_header`` holds the one schema every reader relies on. Version 5
(read, never written) began with an 8-byte magic and a JSON header, and ended with a SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .chunking import Kind
from .errors import ChecksumError, NotLmzipError, TruncatedError

MAGIC = b"\x89LMZ"
VERSION = 10
READS = (5, 6, 7, 8, 9, 10)
FRAME_BYTES = 1 << 22  # a frame restores at most this many bytes: what either end holds at once
FINGERPRINT_BYTES = 4  # of the model's fingerprint, from a v6 header on: 1 in 2^32 that another model passes
_READ_BLOCK = 1 << 20  # a claimed length is read this much at a time, never allocated at once

# The header's fields: tag -> (path, type, default). Fields are written in tag order, each
# only where it differs from its default, so a header has exactly one encoding. ``coding.mixer``
# absent (no mixer) is written as "".
FIELDS = {
    1: (("model", "name"), str, "smollm2-135m"),
    2: (("model", "fingerprint"), bytes, None),
    3: (("model", "vocab"), int, 49152),
    4: (("coding", "engine"), str, "int/3"),
    5: (("coding", "coder"), str, "range64"),
    6: (("coding", "precision"), int, 30),
    7: (("coding", "context"), int, 512),
    8: (("coding", "start_token"), int, 1),
    9: (("coding", "mixer"), str, "mix/3"),
    10: (("coding", "batch_size"), int, None),
    11: (("coding", "dtype"), str, None),
    12: (("replay",), dict, None),  # JSON: the float engine's environment
}  # 10 to 12: files of the float engine, which are read so that the codec can name and refuse them
_OLD_DEFAULTS = {6: {4: "int/1", 9: "mix/1"}, 7: {4: "int/2", 9: "mix/1"}, 8: {4: "int/2", 9: "mix/2"},
                 9: {9: "mix/2"}}  # where each differs from v10


def _defaults(version: int) -> dict[int, object]:
    """Each field's default in a header of format ``version`` (6 to 10)."""
    old = _OLD_DEFAULTS.get(version, {})
    return {tag: old.get(tag, default) for tag, (_, _, default) in FIELDS.items()}

# Version 5: an 8-byte magic, a u16 version and a u32 header length; the header was JSON,
# raw-deflated against this preset dictionary; the footer ended with the input's SHA-256.
_V5_MAGIC = b"\x89LMZ\r\n\x1a\n"
_V5_DICTIONARY = (
    b'"replay":{"cpu_capability":"AVX2","AVX512","device":"cpu","cuda","device_name":"NVIDIA ",'
    b'"engine":"lockstep-window-kv/4","threads":2,"torch":"2.13.0+cpu","transformers":"5.24.0"}}'
    b'"batch_size":48,"dtype":"float32","bfloat16",'
    b'{"coding":{"coder":"range64","context":512,"engine":"int/1",'
    b'"precision":30,"start_token":1},"model":{"fingerprint":"","name":"smollm2-135m","gemma3-270m",'
    b'"vocab":49152}}'
)

# The header's schema: every reader may rely on these fields and types.
SCHEMA = {
    "model": {"name": str, "fingerprint": str, "vocab": int},
    "coding": {"engine": str, "coder": str, "precision": int, "context": int, "start_token": int},
}


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
    if not isinstance(header["coding"].get("mixer", ""), str):
        raise NotLmzipError("not an lmzip file: header field 'coding.mixer' is not str")
    if len(header["model"]["fingerprint"]) < 2 * FINGERPRINT_BYTES:
        raise NotLmzipError("not an lmzip file: header field 'model.fingerprint' is too short")
    return header


def pack_header(header: dict) -> bytes:
    """The fields of ``header``, each that differs from its default; ValueError where a value
    has no encoding (a foreign type, a negative number)."""
    out = bytearray()
    for tag, (path, kind, default) in FIELDS.items():
        value = _get(header, path)
        if path == ("coding", "mixer") and value is None:
            value = ""
        if value is None or (value == default and type(value) is type(default)):
            continue
        if kind is int:
            if type(value) is not int or value < 0:
                raise ValueError(f"header field {'.'.join(path)} = {value!r} is not a count")
            raw = _varint(value)
        elif kind is bytes:  # the fingerprint: exactly FINGERPRINT_BYTES, so no length
            raw = bytes.fromhex(value)[:FINGERPRINT_BYTES]
            if len(raw) != FINGERPRINT_BYTES:
                raise ValueError(f"header field {'.'.join(path)} = {value!r} is too short")
        else:
            if not isinstance(value, kind):
                raise ValueError(f"header field {'.'.join(path)} = {value!r} is not {kind.__name__}")
            raw = (json.dumps(value, separators=(",", ":"), sort_keys=True) if kind is dict else value).encode()
            raw = _varint(len(raw)) + raw
        out += _varint(tag) + raw
    return bytes(out)


def unpack_header(body: bytes, version: int = VERSION) -> dict:
    """The header a ``body`` of format ``version`` (6 to 10) encodes, defaults filled in:
    NotLmzipError where it is no such encoding."""
    src, header, last = _Source(io.BytesIO(body)), {"model": {}, "coding": {}}, 0
    found = {}
    try:
        while src.stream.tell() < len(body):
            tag = src.varint("header")
            if tag not in FIELDS or tag <= last:
                raise NotLmzipError(f"not an lmzip file: header field {tag} is unknown or out of order")
            last, kind = tag, FIELDS[tag][1]
            if kind is int:
                found[tag] = src.varint("header")
                continue
            raw = src.take(FINGERPRINT_BYTES if kind is bytes and version > 6 else src.varint("header"), "header")
            found[tag] = raw.hex() if kind is bytes else json.loads(raw) if kind is dict else raw.decode()
    except (TruncatedError, ChecksumError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise NotLmzipError(f"not an lmzip file: unreadable header ({exc})") from None
    defaults = _defaults(version)
    for tag, (path, _, _) in FIELDS.items():
        value = found.get(tag, defaults[tag])
        if value is not None and not (path == ("coding", "mixer") and value == ""):
            obj = header
            for key in path[:-1]:
                obj = obj[key]
            obj[path[-1]] = value
    return header


def _get(header: dict, path: tuple[str, ...]):
    obj = header
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _unpack_v5_header(packed: bytes) -> dict:
    try:
        unpacker = zlib.decompressobj(-15, zdict=_V5_DICTIONARY)
        return json.loads(unpacker.decompress(packed) + unpacker.flush())
    except (zlib.error, ValueError) as exc:
        raise ChecksumError(f"damaged lmzip file: unreadable header ({exc})") from None


def head_bytes(header: dict) -> bytes:
    """What a member starts with: magic, version, the packed header and its CRC."""
    body = pack_header(header)
    head = MAGIC + bytes([VERSION]) + _varint(len(body)) + body
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
            for v in (e.tokens << 2 | int(e.kind), e.raw_size, e.payload_bits):
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
    """The whole input of a member: its size in bytes and in characters, and the check (hex) of
    it all: from v6, the CRC32 of the footer's numbers started from the input's CRC32; v5, the
    input's SHA-256."""

    size: int
    characters: int
    check: str
    algorithm: str = "crc32"

    @classmethod
    def sealed(cls, size: int, characters: int, input_crc: int, version: int = VERSION) -> Footer:
        return cls(size, characters, f"{zlib.crc32(_footer_numbers(size, characters, version), input_crc):08x}")

    def to_bytes(self) -> bytes:
        if self.algorithm != "crc32":
            raise ValueError("version 5 footers are read, never written")
        return _footer_numbers(self.size, self.characters, VERSION) + bytes.fromhex(self.check)


def _footer_numbers(size: int, characters: int, version: int) -> bytes:
    """The footer's numbers as format ``version`` (6 to 8) writes them; ValueError where a count is
    negative, or (from v7) the characters outnumber the bytes."""
    count = characters if version == 6 else size - characters
    if size < 0 or count < 0:
        raise ValueError(f"a footer cannot hold {size} bytes and {characters} characters")
    return _varint(0) + _varint(size) + _varint(count)


class Digest:
    """A member's restored bytes, hashed as its footer checks them (``version``: the member's)."""

    def __init__(self, version: int) -> None:
        self.crc, self.sha, self.version = 0, hashlib.sha256() if version < 6 else None, version

    def update(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        if self.sha is not None:
            self.sha.update(data)

    def matches(self, footer: Footer) -> bool:
        if self.sha is not None:
            return self.sha.hexdigest() == footer.check
        return Footer.sealed(footer.size, footer.characters, self.crc, self.version).check == footer.check


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


def _read_head(stream: BinaryIO) -> tuple[dict, bytes, int]:
    """The header, the member's head bytes as read (magic to header CRC) and its format version."""
    src = _Source(stream)
    start = stream.read(len(MAGIC) + 1)
    if not start or not (MAGIC + b"\r").startswith(start[: len(MAGIC)]):
        raise NotLmzipError("not an lmzip file (bad magic)")
    src.record = bytearray(start)
    if len(start) <= len(MAGIC):
        src.take(len(MAGIC) + 1 - len(start), "header")
    version = src.record[len(MAGIC)]
    if version == _V5_MAGIC[len(MAGIC)]:  # the 8-byte magic of version 5 and before, then a u16 version
        if bytes(src.record) + src.take(len(_V5_MAGIC) - len(MAGIC) - 1, "header") != _V5_MAGIC:
            raise NotLmzipError("not an lmzip file (bad magic)")
        version, size = struct.unpack("<HI", src.take(6, "header"))
        if version != 5:  # no later version has this layout
            raise _unsupported(version)
    elif 6 <= version <= VERSION:
        size = src.varint("header")
    else:
        raise _unsupported(version)
    body = src.take(size, "header")
    head = bytes(src.record)
    src.crc("header")
    header = check_header(_unpack_v5_header(body) if version < 6 else unpack_header(body, version))
    if version < 6 and "mixer" in header["coding"]:
        raise NotLmzipError("not an lmzip file: a version 5 header names a mixer")
    return header, head + struct.pack("<I", zlib.crc32(head)), version


def _unsupported(version: int) -> NotLmzipError:
    return NotLmzipError(f"lmzip format version {version} is not supported (this build reads "
                         f"{', '.join(map(str, READS))})")


class Member:
    """One member being read from a stream: its header, then ``frames()`` one at a time, then
    ``footer`` (set once the frames are exhausted and their sizes add up to it)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.header, self._head, self.version = _read_head(stream)
        self.footer: Footer | None = None
        self._src = _Source(stream)

    def frames(self) -> Iterator[Frame]:
        src, size = self._src, 0
        while True:
            src.record = bytearray()
            count = src.varint("chunk table")
            if count == 0:
                self.footer = _read_footer(src, size, self.version)
                return
            frame = _read_frame(src, count, frame_place(self._head, size), self.version)
            size += frame.raw_size
            yield frame


def _read_frame(src: _Source, count: int, place: bytes, version: int) -> Frame:
    entries, size = [], 0
    for _ in range(count):
        if version < 6:
            kind, tokens, raw_size, payload_bits = (src.varint("chunk table") for _ in range(4))
        else:
            packed, raw_size, payload_bits = (src.varint("chunk table") for _ in range(3))
            kind, tokens = packed & 3, packed >> 2
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


def _read_footer(src: _Source, size: int, version: int) -> Footer:
    """The footer; its check is verified against the restored bytes (``Digest``), but in v5, where
    it has a CRC of its own."""
    if version < 6:
        footer = Footer(src.varint("footer"), src.varint("footer"), src.take(32, "footer").hex(), "sha256")
        src.crc("footer")
    else:
        total, count = src.varint("footer"), src.varint("footer")
        if version > 6 and count > total:
            raise ChecksumError("damaged lmzip file: the footer counts more characters than bytes")
        footer = Footer(total, count if version == 6 else total - count, src.take(4, "footer").hex())
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
    the footer's check at decode."""
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

