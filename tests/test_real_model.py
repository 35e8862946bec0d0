"""One round trip of a few KB with the bundled default model, SmolLM2-135M (skipped if not installed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import zstandard

import lmzip
from lmzip import LMZip, chunking, container, intmodel, models

pytestmark = pytest.mark.skipif(not models.REGISTRY[models.DEFAULT_MODEL].installed(),
                                reason="default model package not installed")

TEXT = """Alice was beginning to get very tired of sitting by her sister on the bank, and of
having nothing to do: once or twice she had peeped into the book her sister was reading, but
it had no pictures or conversations in it, 'and what is the use of a book,' thought Alice,
'without pictures or conversations?' So she was considering in her own mind (as well as she
could, for the hot day made her feel very sleepy and stupid), whether the pleasure of making a
daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a
White Rabbit with pink eyes ran close by her. Ünïcödé, 日本語, emoji 🐇, and code: def f(x): return x**2
""".encode()
ALICE = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "prose" / "alice29.txt"


def test_default_model_round_trip_and_ratio():
    data = ALICE.read_bytes()[4000:8000] + TEXT if ALICE.exists() else TEXT
    codec = LMZip(models.DEFAULT_MODEL, device="cpu", chunk_tokens=256)
    blob = codec.compress(data)
    s = codec.last_stats
    # Decode with the model named by its .gguf path: a second, separately loaded copy of the same weights.
    gguf = models.REGISTRY[models.DEFAULT_MODEL].gguf_path()
    assert lmzip.decompress(blob, model=str(gguf)) == data
    assert s.payload_bits <= s.ideal_bits * 1.001 + 100 * 8
    assert abs(s.ideal_bits - s.mixed_bits) <= 0.001 * s.mixed_bits
    # A pretrained model must beat zstd's strongest setting on English prose, payload against payload.
    assert s.payload_bits < 0.6 * 8 * len(zstandard.ZstdCompressor(level=19).compress(data))


def test_integer_cache_gives_the_same_model_and_files(tmp_path, monkeypatch, capfd):
    """The disk cache of the quantised GGUF: written on the first load, read on the next, identical
    files either way; a checked entry is trusted until one of its files changes; a damaged entry is
    noticed and rebuilt. The GGUF reader's own progress bar
    stays off (lmzip draws its own, and none under -q)."""
    monkeypatch.setenv("LMZIP_CACHE", str(tmp_path))
    full = models.load_integer(models.DEFAULT_MODEL, device="cpu")
    assert full.module is not None
    assert "GGUF" not in capfd.readouterr().err
    entry = next((tmp_path / "int").iterdir())
    cached = models.load_integer(models.DEFAULT_MODEL, device="cpu")
    assert cached.module is None and cached.integer_fingerprint == full.integer_fingerprint
    assert isinstance(cached.tokenizer, models.CachedTokenizer)  # transformers' tokenizer, without transformers
    blob = LMZip(cached).compress(TEXT)
    assert blob == LMZip(full).compress(TEXT) and LMZip(full).decompress(blob) == TEXT
    hashed, real = [], intmodel.IntModel.fingerprint  # an entry checked once is trusted until a file changes
    monkeypatch.setattr(intmodel.IntModel, "fingerprint", lambda self: hashed.append(1) or real(self))
    again = models.load_integer(models.DEFAULT_MODEL, device="cpu")
    assert again.module is None and again.integer_fingerprint == full.integer_fingerprint and not hashed
    with open(entry / "model.bin", "r+b") as f:  # a byte amid the weights, flipped
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 1]))
    rebuilt = models.load_integer(models.DEFAULT_MODEL, device="cpu")
    assert hashed and rebuilt.module is not None and rebuilt.integer_fingerprint == full.integer_fingerprint
    (entry / "fingerprint").write_text("0" * 32)  # the mark names the fingerprint it matched: checked again
    rebuilt = models.load_integer(models.DEFAULT_MODEL, device="cpu")
    assert rebuilt.module is not None and (entry / "fingerprint").read_text() == full.integer_fingerprint


def test_a_files_hash_is_remembered_until_it_changes(tmp_path, monkeypatch):
    """What the integer cache is keyed by: a file's SHA-256, kept by its path, size, mtime and
    inode, so a start-up need not read the GGUF; a file changed is hashed again."""
    monkeypatch.setenv("LMZIP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(b"weights")
    assert models._file_sha256(path) == hashlib.sha256(b"weights").hexdigest()
    (memo,) = (tmp_path / "cache" / "sha256").iterdir()
    memo.write_text("f" * 64)  # what a start-up reads instead of the file
    assert models._file_sha256(path) == "f" * 64
    memo.write_text("f" * 10)  # torn
    assert models._file_sha256(path) == hashlib.sha256(b"weights").hexdigest()
    path.write_bytes(b"other weights")
    assert models._file_sha256(path) == hashlib.sha256(b"other weights").hexdigest()


def test_a_one_chunk_text_file_spends_at_most_40_bytes_on_its_container():
    """At the defaults the header is the model's fingerprint alone: magic, version, header, table
    and footer with every check come to 40 bytes, counted from the parsed file."""
    blob = lmzip.compress(TEXT)
    archive = container.parse(blob)
    assert [e.kind for e in archive.entries] == [chunking.Kind.LM]
    assert archive.container_bytes <= 40
    assert len(blob) == archive.container_bytes + -(-archive.entries[0].payload_bits // 8)
    assert lmzip.decompress(blob) == TEXT
