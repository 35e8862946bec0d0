"""Determinism: the decoder reproduces the encoder's frequency tables bit for bit, under any caller settings."""

from __future__ import annotations

import hashlib

import pytest
import torch

import lmzip
from lmzip import LMZip, engine

TEXT = ("Determinism is the heart of correctness; the decoder replays the encoder. " * 25).encode()


def test_decoder_sees_the_encoders_tables(tiny_lm, monkeypatch):
    """Hash every step's probabilities while encoding, then while decoding: same sequence.

    The integer tables are a pure function of these float32 probabilities (test_quantize), so the
    decoder builds exactly the encoder's tables.
    """
    seen: list[str] = []
    real = engine.probabilities

    def recording(logits, out=None):
        p = real(logits, out=out)
        seen.append(hashlib.sha256(p.numpy().tobytes()).hexdigest())
        return p

    monkeypatch.setattr(engine, "probabilities", recording)
    codec = LMZip(tiny_lm, engine="float", batch_size=3, chunk_tokens=48)
    blob = codec.compress(TEXT)
    encoded, seen[:] = list(seen), []
    assert codec.decompress(blob) == TEXT
    assert encoded and seen == encoded


@pytest.mark.parametrize("encode_threads,decode_threads", [(2, 1), (1, 2)])
def test_thread_count_is_replayed(tiny_lm, encode_threads, decode_threads):
    before = torch.get_num_threads()
    blob = LMZip(tiny_lm, engine="float", batch_size=4, chunk_tokens=40, threads=encode_threads).compress(TEXT)
    torch.set_num_threads(decode_threads)
    try:
        assert LMZip(tiny_lm, engine="float").decompress(blob) == TEXT  # the caller's own batch size and threads do not matter
        assert torch.get_num_threads() == decode_threads  # and are given back afterwards
    finally:
        torch.set_num_threads(before)


def test_batch_layout_is_part_of_the_file(tiny_lm):
    """The same text at another batch size is another computation; each file still decodes itself."""
    a = LMZip(tiny_lm, engine="float", batch_size=1, chunk_tokens=40).compress(TEXT)
    b = LMZip(tiny_lm, engine="float", batch_size=8, chunk_tokens=40).compress(TEXT)
    codec = LMZip(tiny_lm, engine="float", batch_size=2)
    assert codec.decompress(a) == TEXT and codec.decompress(b) == TEXT


def test_batches_are_even_and_keep_file_order():
    from lmzip.chunking import Chunk, Kind
    from lmzip.codec import _batches

    chunks = [Chunk(Kind.LM, b"x")] * 7 + [Chunk(Kind.ZSTD, b"y")] + [Chunk(Kind.LM, b"x")] * 3
    layout = _batches(chunks, 4)
    assert [len(b) for b in layout] == [4, 3, 3]
    assert [i for b in layout for i in b] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert _batches([], 4) == [] and _batches(chunks, 100) == [[0, 1, 2, 3, 4, 5, 6, 8, 9, 10]]


def test_int8_files_round_trip_and_name_their_dtype(tiny_model_dir, tiny_lm):
    """The int8 path is its own computation: its files decode only under int8, and do so exactly."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from lmzip import ReplayError, container, models

    lm8 = models.load(str(tiny_model_dir), device="cpu", dtype="int8")
    layer = lm8.module.model.layers[0]
    assert isinstance(layer.mlp.down_proj, Int8Linear) and isinstance(layer.self_attn.q_proj, Int8Linear)
    assert type(lm8.module.lm_head) is torch.nn.Linear  # the head stays float32
    assert lm8.fingerprint == tiny_lm.fingerprint  # the same model, run another way
    codec8 = LMZip(lm8, engine="float", batch_size=3, chunk_tokens=48)
    blob = codec8.compress(TEXT)
    header = container.parse(blob).header
    assert header["coding"]["dtype"] == "int8"
    assert header["replay"]["quantized_engine"] == torch.backends.quantized.engine
    assert LMZip(lm8, engine="float").decompress(blob) == TEXT
    assert lmzip.decompress(blob, str(tiny_model_dir)) == TEXT  # int8 chosen from the file
    with pytest.raises(ReplayError, match="int8"):
        LMZip(tiny_lm, engine="float").decompress(blob)
    codec32 = LMZip(tiny_lm, engine="float", batch_size=3, chunk_tokens=48)
    codec32.compress(TEXT)
    assert codec8.last_stats.ideal_bits != codec32.last_stats.ideal_bits  # int8 logits really differ


def test_int8_is_refused_off_the_cpu():
    from lmzip import ModelError, models

    with pytest.raises(ModelError, match="CPU only"):
        models.resolve_dtype("int8", torch.device("cuda"))
