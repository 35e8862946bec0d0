"""Ways to damage a .lmz file, shared by the fuzz test (``test_fuzz.py``), ``bench/fuzz.py`` and
``bench/corruption.py``.

A damage is a list of operations, each a tuple a strategy or a seeded generator can draw, and
``apply`` is a pure function of the blob and that list, so a finding replays from its ops alone.
The property every caller checks: decoding a damaged file gives the original bytes or raises
one of lmzip's named errors, never other bytes and never another exception.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

from lmzip import LmzipError, container

OPS = ("flip", "byte", "truncate", "insert", "delete", "header", "table", "footer")
NUMBERS = (0, 1, 7, 8, 255, 2**20, 2**40)  # what a table or footer field is set to
JSON_VALUES = (0, 1, -1, 2, 31, 2**31, 2**64, -(2**63), 1.5, "", "x", "int/1", None, True, [], {}, "0" * 16)


def apply(blob: bytes, ops: list[tuple]) -> bytes:
    """``blob`` after each operation in turn: ``("flip", pos, bit)``, ``("byte", pos, value)``,
    ``("truncate", pos)``, ``("insert", pos, data)``, ``("delete", pos, n)``, ``("header", path, value)``
    (a header field set, every checksum made sound again) and ``("table", index, field, value)`` (a
    chunk-table number set, its checksum made sound) and ``("footer", field, value)`` (the footer's
    size or characters set, its checksum made sound). Positions wrap around the current length."""
    out = bytearray(blob)
    for op in ops:
        kind, n = op[0], max(len(out), 1)
        if kind == "flip" and out:
            out[op[1] % n] ^= 1 << op[2]
        elif kind == "byte" and out:
            out[op[1] % n] = op[2]
        elif kind == "truncate":
            del out[op[1] % n :]
        elif kind == "insert":
            out[op[1] % n : op[1] % n] = op[2]
        elif kind == "delete":
            del out[op[1] % n : op[1] % n + op[2]]
        elif kind == "header":
            out = bytearray(_resigned_header(bytes(out), op[1], op[2]))
        elif kind == "table":
            out = bytearray(_resigned_table(bytes(out), op[1], op[2], op[3]))
        elif kind == "footer":
            out = bytearray(_resigned_footer(bytes(out), op[1], op[2]))
    return bytes(out)


def header_end(blob: bytes) -> tuple[dict, int]:
    """The header of ``blob``'s first member, and the offset where its first frame starts."""
    stream = io.BytesIO(blob)
    return container.read_header(stream), stream.tell()


def reseal_header(blob: bytes, change) -> bytes:
    """``blob`` with its (first) header edited in place by ``change(header)`` and every checksum
    made sound again, the frames' too (their CRCs cover the header's), as a foreign encoder could
    write it; where the rest does not parse, only the header is resealed."""
    try:
        archives = container.members(blob)
    except LmzipError:
        archives = None
    if archives:
        change(archives[0].header)
        return b"".join(a.to_bytes() for a in archives)
    header, end = header_end(blob)
    change(header)
    return container.head_bytes(header) + blob[end:]


def v5_head(header: dict) -> bytes:
    """The head of a version 5 member with ``header``, as the v5 encoder wrote it (JSON, deflated
    against the v5 dictionary): for testing what this build still reads, types a v6 or v7 header cannot
    even encode included."""
    body = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=container._V5_DICTIONARY)
    body = packer.compress(body) + packer.flush()
    head = struct.pack("<8sHI", container._V5_MAGIC, 5, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


def _resigned_header(blob: bytes, path: tuple[str, ...], value) -> bytes:
    def change(header):
        obj = header
        for key in path[:-1]:
            obj = obj.setdefault(key, {}) if isinstance(obj.get(key, {}), dict) else {}
        if value is _MISSING:
            obj.pop(path[-1], None)
        else:
            obj[path[-1]] = value

    try:
        return reseal_header(blob, change)
    except Exception:  # noqa: BLE001 - a header too damaged to read is left as it is
        return blob


def _resigned_table(blob: bytes, index: int, field: int, value: int) -> bytes:
    try:
        archive = container.parse(blob)
    except Exception:  # noqa: BLE001
        return blob
    if not archive.entries:
        return blob
    e = archive.entries[index % len(archive.entries)]
    name = ("kind", "tokens", "raw_size", "payload_bits", "crc")[field % 5]
    value = abs(value)
    if name == "payload_bits":  # past the payload's own bits, the re-packing would only allocate
        value %= 8 * len(archive.payloads[index % len(archive.entries)]) + 1
    setattr(e, name, value if name != "kind" else value % 4 if value % 4 in (1, 2, 3) else e.kind)
    try:
        return archive.to_bytes()
    except (ValueError, OverflowError, struct.error):
        return blob


def _resigned_footer(blob: bytes, field: int, value: int) -> bytes:
    try:
        archive = container.parse(blob)
    except Exception:  # noqa: BLE001
        return blob
    setattr(archive.footer, ("size", "characters")[field % 2], abs(value))
    try:
        return archive.to_bytes()
    except ValueError:  # a version 5 file: its footer is read, never written
        return blob


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING = _Missing()
HEADER_PATHS = [(a, b) for a, fields in container.SCHEMA.items() for b in fields] + [
    ("model",), ("coding",), ("coding", "mixer")]


def random_ops(rng: random.Random, blob_size: int, count: int) -> list[tuple]:
    """``count`` operations drawn from ``rng``, positions within ``blob_size``."""
    ops = []
    for _ in range(count):
        kind = rng.choice(OPS)
        pos = rng.randrange(max(blob_size, 1))
        if kind == "flip":
            ops.append((kind, pos, rng.randrange(8)))
        elif kind == "byte":
            ops.append((kind, pos, rng.randrange(256)))
        elif kind == "truncate":
            ops.append((kind, pos))
        elif kind == "insert":
            ops.append((kind, pos, rng.randbytes(rng.choice((1, 2, 8, 64)))))
        elif kind == "delete":
            ops.append((kind, pos, rng.choice((1, 2, 8, 64))))
        elif kind == "header":
            ops.append((kind, rng.choice(HEADER_PATHS), rng.choice(JSON_VALUES + (_MISSING,))))
        elif kind == "table":
            ops.append((kind, rng.randrange(64), rng.randrange(5), rng.choice(NUMBERS)))
        else:
            ops.append((kind, rng.randrange(2), rng.choice(NUMBERS)))
    return ops


def describe(ops: list[tuple]) -> str:
    return json.dumps([[repr(x) if isinstance(x, (bytes, _Missing)) else x for x in op] for op in ops])


class _Slow(Exception):
    pass


_alarm = {"rang": False}  # whether the time limit fired during the current decode


def _too_slow(signum, frame):
    _alarm["rang"] = True
    raise _Slow


def outcome(decode, original: bytes, limit: float | None = None) -> str:
    """What decoding a damaged file did: ``original`` (the damage changed nothing that matters),
    the name of the lmzip error raised, ``WRONG OUTPUT``, ``CRASH <exception type>``, or, past
    ``limit`` seconds, ``SLOW`` (a decoder's work must stay near what the file's payload can code:
    a table claiming more tokens than its payload holds is caught once the stream is overrun)."""
    import signal

    from lmzip import LmzipError

    _alarm["rang"] = False
    if limit is not None:
        signal.signal(signal.SIGALRM, _too_slow)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        out = decode()
    except LmzipError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - what the campaign counts
        if _alarm["rang"]:  # _Slow, or what a numba kernel it interrupted made of it (a SystemError)
            return "SLOW"
        return f"CRASH {type(exc).__name__}: {exc}"[:200]
    finally:
        if limit is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return "original" if out == original else "WRONG OUTPUT"


SLOW_SECONDS = 20  # a damaged seed file decodes in well under a second; past this it is stopped


def is_finding(result: str) -> bool:
    return result.startswith(("CRASH", "WRONG", "SLOW"))
