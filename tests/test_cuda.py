"""Whole round trips on a CUDA device (skipped where there is none): the files are the CPU's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmzip import LMZip, codec, models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DATA = ("GPU round trip: the decoder computes the encoder's integer tables on another device. " * 30
        ).encode() + b"\xff\xfe invalid utf-8 \xc3\x28 and after"


def test_integer_engine_files_are_the_cpus_and_cross_devices(tiny_model_dir):
    on_cpu = LMZip(str(tiny_model_dir), device="cpu", batch_size=3, chunk_tokens=48)
    on_gpu = LMZip(str(tiny_model_dir), device="cuda", batch_size=7, chunk_tokens=48)
    assert on_gpu.workers.in_flight == (2 if codec._threadsafe_numba() else 1)  # its 2 batches at once, 2 streams
    blob = on_gpu.compress(DATA)
    assert blob == on_cpu.compress(DATA)  # the integer engine's tables: the same integers on every device
    assert on_cpu.decompress(blob) == DATA
    assert on_gpu.decompress(blob) == DATA


@pytest.mark.skipif(not models.REGISTRY[models.DEFAULT_MODEL].installed(), reason="default model not installed")
def test_real_model_round_trips_many_rows_on_cuda():
    """The bundled model, rows of uneven length, coded on the GPU and decoded on the CPU."""
    data = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_bytes()[:6000]
    blob = LMZip(device="cuda", batch_size=8, chunk_tokens=128).compress(data)
    assert LMZip(device="cpu", batch_size=3).decompress(blob) == data
