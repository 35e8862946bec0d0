"""Byte-exact round trips through the whole pipeline with a tiny random model and the real tokenizer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lmzip import LMZip, chunking, container, mixer
from lmzip import codec as codec_module
from lmzip.chunking import Kind
from lmzip.codec import MIN_CONTEXT

CASES = {
    "empty": b"",
    "one byte": b"x",
    "unicode": "漢字かな交じり文 👨‍👩‍👧‍👦 🇺🇳 e\u0301 a\u0308\u0304 Ω≈ç√ ﷽".encode(),
    "crlf": b"line one\r\nline two\r\n\r\nend\r",
    "control": bytes(range(32)) * 3 + b"\x7f tail",
    "invalid utf-8": b"valid start " * 8 + b"\xff\xfe\xc3\x28 \xe2\x82 broken" + b" valid end" * 10,
    "special-token look-alikes": b"<|endoftext|><|im_start|>user\n<s></s>[INST]",
    "long repeat": b"abc" * 3000,
}


@pytest.fixture(scope="module")
def codec(tiny_lm):
    return LMZip(tiny_lm, batch_size=4, chunk_tokens=64)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(codec, name):
    data = CASES[name]
    blob = codec.compress(data)
    assert codec.decompress(blob) == data


def test_random_bytes_go_to_fallback_and_round_trip(codec):
    data = np.random.default_rng(0).bytes(100_000)
    blob = codec.compress(data)
    assert codec.decompress(blob) == data
    kinds = {e.kind for e in container.parse(blob).entries}
    assert Kind.LM not in kinds
    assert len(blob) <= len(data) + 1024  # stored, not expanded


def test_many_chunks_and_batches(codec, tiny_lm):
    text = ("The quick brown fox jumps over the lazy dog. " * 60).encode()
    blob = codec.compress(text)
    entries = container.parse(blob).entries
    assert sum(e.kind == Kind.LM for e in entries) > 2 * codec.batch_size  # several full batches and a partial one
    assert max(e.tokens for e in entries) <= codec.chunk_tokens + 2
    assert codec.decompress(blob) == text


@pytest.mark.parametrize("context", [MIN_CONTEXT, 16])
def test_chunks_longer_than_the_context_run_in_a_window_and_round_trip(tiny_lm, context):
    """The cache fills and moves many times within each chunk (every token at the smallest window,
    which keeps the sink and one token); the decoder reads the context from the file."""
    text = "".join(f"Line {i}: the window moves, {i * 7 % 13} and {i * i}.\n" for i in range(40)).encode()
    codec = LMZip(tiny_lm, batch_size=3, chunk_tokens=150, context=context)
    blob = codec.compress(text)
    archive = container.parse(blob)
    assert archive.header["coding"]["context"] == context
    assert min(e.tokens for e in archive.entries if e.kind == Kind.LM) > 4 * 16
    assert LMZip(tiny_lm, context=999).decompress(blob) == text


def test_a_window_with_no_free_slot_is_refused(tiny_lm):
    """Two slots hold the sink and the one token kept when the window moves, and nothing else."""
    with pytest.raises(ValueError):
        LMZip(tiny_lm, context=MIN_CONTEXT - 1)


def test_default_chunk_length_fills_one_batch(tiny_lm, monkeypatch):
    monkeypatch.setattr(chunking, "MIN_CHUNK_TOKENS", 16)
    text = ("Every row of the batch gets one chunk of this text, as long as it takes. " * 12).encode()
    codec = LMZip(tiny_lm, batch_size=5)
    blob = codec.compress(text)
    archive = container.parse(blob)
    tokens = [e.tokens for e in archive.entries if e.kind == Kind.LM]
    assert len(tokens) == 5 and max(tokens) <= chunking.chunk_length(sum(tokens), 5) + 2
    assert max(tokens) - min(tokens) < 0.1 * sum(tokens) / 5  # one full batch of even rows
    assert codec.decompress(blob) == text


def test_text_tokenised_in_segments_still_cuts_at_token_starts(tiny_lm, monkeypatch):
    text = "".join(f"Line {i}: the cuts land where a token starts, segment or not.\n" for i in range(40))
    whole = chunking._token_starts(text, tiny_lm.tokenizer)
    monkeypatch.setattr(chunking, "SEGMENT_CHARS", 100)
    parts = chunking._token_starts(text, tiny_lm.tokenizer)
    assert np.array_equal(parts, whole)  # segments end after a newline, where this tokenizer splits anyway
    chunks, _ = chunking.split(text.encode(), tiny_lm.tokenizer, chunk_tokens=50)
    assert b"".join(c.raw for c in chunks) == text.encode() and len(chunks) > 10
    assert LMZip(tiny_lm, chunk_tokens=50).decompress(LMZip(tiny_lm, chunk_tokens=50).compress(text.encode())) == text.encode()


def test_one_chunk_decodes_alone(codec):
    text = "".join(f"Paragraph {i}: some words that differ, {i * i}.\n" for i in range(200)).encode()
    blob = codec.compress(text)
    entries = container.parse(blob).entries
    offsets = np.cumsum([0] + [e.raw_size for e in entries])
    k = len(entries) - 2
    assert codec.decompress(blob, only={k}) == text[offsets[k] : offsets[k + 1]]


def test_stats_account_for_every_bit(codec):
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank. " * 20).encode()
    blob = codec.compress(text)
    s = codec.last_stats
    # Payloads are packed to the bit and the last byte padded.
    assert s.output_bytes == len(blob) == -(-(s.payload_bits + 8 * s.fallback_bytes) // 8) + s.container_bytes
    # Ending a stream costs at most two bits, and can undercut the ideal (zeros past the end are free).
    assert s.ideal_bits - 16 * s.lm_chunks <= s.payload_bits <= s.ideal_bits * 1.0001 + 2 * s.lm_chunks
    assert abs(s.mixed_bits - s.ideal_bits) <= 0.001 * s.mixed_bits
    assert s.mixed_bits < 0.8 * s.ce_bits  # the text repeats itself, and the mixer remembers it
    assert s.tokens == sum(e.tokens for e in container.parse(blob).entries)


def test_the_mixer_can_be_turned_off(codec):
    """Without the mixer the tables are the model's alone, and the file says so; both decode."""
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank. " * 20).encode()
    on = codec.compress(text)
    on_stats = codec.last_stats
    plain = LMZip(codec.lm, batch_size=codec.batch_size, chunk_tokens=codec.chunk_tokens, mix=False)
    off = plain.compress(text)
    assert "mixer" not in container.parse(off).header["coding"]
    assert container.parse(on).header["coding"]["mixer"] == mixer.REVISION == "mix/3"
    assert plain.last_stats.mixed_bits == plain.last_stats.ce_bits == pytest.approx(on_stats.ce_bits)
    assert len(on) < len(off)
    assert codec.decompress(off) == text == plain.decompress(on)


def test_file_is_deterministic(codec):
    data = CASES["unicode"] * 5
    assert codec.compress(data) == codec.compress(data)


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")),
                    reason="corpus not present")
def test_corpus_sample_round_trips(codec):
    from conftest import CORPUS

    for path in sorted(CORPUS.glob("*/*"))[:4]:
        data = path.read_bytes()[:3000]
        assert codec.decompress(codec.compress(data)) == data, path


def test_open_streams_like_gzip(tiny_model_dir, tmp_path, monkeypatch):
    """``open`` writes and reads a frame at a time; the file is the one ``compress`` writes, however
    the writes were cut, and appears at its path only once it is complete."""
    import lmzip

    monkeypatch.setattr(container, "FRAME_BYTES", 256)
    lines = [f"line {i}: second line, ünïcödé, {i * i}\n".encode() for i in range(30)]
    data = b"".join(lines)
    path = tmp_path / "notes.lmz"
    with lmzip.open(path, "wb", model=str(tiny_model_dir), chunk_tokens=32) as f:
        for line in lines:
            f.write(line)
        assert not path.exists()  # frames so far went to a temporary file beside it
    blob = path.read_bytes()
    assert blob == LMZip(str(tiny_model_dir), chunk_tokens=32).compress(data)
    assert len(container.parse(blob).frames) > 4
    with lmzip.open(path, "rb", model=str(tiny_model_dir)) as f:
        assert f.readline() == lines[0] and f.read(7) == lines[1][:7]
        assert f.read() == data[len(lines[0]) + 7 :]
    with pytest.raises(ValueError):
        lmzip.open(path, "a")


def test_batches_are_even_and_keep_file_order():
    from lmzip.codec import _batches

    chunks = [chunking.Chunk(Kind.LM, b"x")] * 7 + [chunking.Chunk(Kind.ZSTD, b"y")] + [chunking.Chunk(Kind.LM, b"x")] * 3
    layout = _batches(chunks, 4)
    assert [len(b) for b in layout] == [4, 3, 3]
    assert [i for b in layout for i in b] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert _batches([], 4) == [] and _batches(chunks, 100) == [[0, 1, 2, 3, 4, 5, 6, 8, 9, 10]]


def test_in_order_runs_up_to_depth_jobs_at_once_and_keeps_their_order():
    """Two batches in flight (``codec.in_order``): the results in job order whatever order the jobs
    end in, never more than ``depth`` running, and no job started after the caller stops."""
    import threading
    import time

    from lmzip.codec import in_order

    running, most, started, lock = [0], [0], [], threading.Lock()

    def job(k: int) -> int:
        with lock:
            started.append(k)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 * (k % 3 == 0))  # jobs 0, 3, 6 end after the job behind them
        with lock:
            running[0] -= 1
        return k * k

    assert list(in_order(job, range(8), 2)) == [k * k for k in range(8)]
    assert most[0] == 2 and sorted(started) == list(range(8))
    assert list(in_order(job, range(5), 1)) == [k * k for k in range(5)]
    started.clear()
    results = in_order(job, range(8), 2)
    assert next(results) == 0
    results.close()  # the caller stops: job 1 was running, job 2 may have started once 0 was taken
    assert sorted(started) in ([0, 1], [0, 1, 2])

    def broken(k: int) -> int:
        if k == 2:
            raise ValueError("job 2")
        return k
    with pytest.raises(ValueError, match="job 2"):
        list(in_order(broken, range(6), 2))


@pytest.mark.skipif(not codec_module._threadsafe_numba(), reason="numba's workqueue layer runs one parallel kernel at a time")
def test_two_batches_in_flight_on_the_device_path_write_the_same_files(tiny_lm, revision):
    """The GPU's layout, run here on the CPU: the device path's predictor (torch throughout, static
    attention, the logits left where they are made), two batches at once on threads of their own.
    Its files are the one-at-a-time CPU files, byte for byte, and each decodes the other's."""
    import dataclasses

    import torch

    from lmzip import exact, intmodel, predictor

    cpu = tiny_lm.predictor()
    device = predictor.Predictor(cpu.model, torch.device("cpu"), cpu.start_token)
    device.runner = intmodel.Runner(cpu.model, exact.Float32Gemm(), torch.device("cpu"), fused=False, static=True)
    device.prefill_tokens, device.head_tokens = predictor.DEVICE_PREFILL_TOKENS, predictor.DEVICE_HEAD_TOKENS
    gpu_like = dataclasses.replace(tiny_lm, _predictor=device)
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank. " * 40).encode()
    one = LMZip(tiny_lm, batch_size=3, chunk_tokens=40, context=16, revision=revision)
    two = LMZip(gpu_like, batch_size=3, chunk_tokens=40, context=16, revision=revision)
    two.workers = codec_module.Local(two, in_flight=2)
    blob = one.compress(text)
    assert len(codec_module._batches(container.parse(blob).entries, 3)) >= 4  # batches enough to overlap
    assert two.compress(text) == blob
    assert two.decompress(blob) == text and one.decompress(two.compress(text)) == text
