"""Whole round trips on a CUDA device (skipped where there is none), and files made there stay there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmzip import LMZip, ReplayError, container, models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DATA = ("GPU round trip: the decoder replays the encoder's lockstep batches on the same device. " * 30
        ).encode() + b"\xff\xfe invalid utf-8 \xc3\x28 and after"


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def cuda_lm(request, tiny_model_dir):
    return models.load(str(tiny_model_dir), device="cuda", dtype=request.param)


def test_round_trip_on_cuda(cuda_lm):
    blob = LMZip(cuda_lm, engine="float", batch_size=5, chunk_tokens=48).compress(DATA)
    header = container.parse(blob).header
    assert header["replay"]["device"] == "cuda"
    assert header["coding"]["dtype"] == str(cuda_lm.dtype).removeprefix("torch.")
    assert LMZip(cuda_lm, engine="float").decompress(blob) == DATA  # a fresh codec, the caller's defaults


def test_a_cuda_file_is_refused_on_cpu(cuda_lm, tiny_model_dir):
    blob = LMZip(cuda_lm, engine="float", batch_size=5, chunk_tokens=48).compress(DATA)
    cpu = models.load(str(tiny_model_dir), device="cpu", dtype=str(cuda_lm.dtype).removeprefix("torch."))
    with pytest.raises(ReplayError, match="device"):
        LMZip(cpu, engine="float").decompress(blob)


@pytest.mark.skipif(not models.REGISTRY[models.DEFAULT_MODEL].installed(), reason="default model not installed")
def test_real_model_round_trips_many_rows_on_cuda():
    """The bundled model in bfloat16, rows of uneven length: engine /1 failed exactly this on an H200."""
    data = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_bytes()[:6000]
    lm = models.load(models.DEFAULT_MODEL, device="cuda")
    blob = LMZip(lm, engine="float", batch_size=8, chunk_tokens=128).compress(data)
    assert LMZip(lm, engine="float").decompress(blob) == data


def test_integer_engine_files_are_the_cpus_and_cross_devices(tiny_model_dir):
    on_cpu = LMZip(str(tiny_model_dir), device="cpu", batch_size=3, chunk_tokens=48)
    on_gpu = LMZip(str(tiny_model_dir), device="cuda", batch_size=7, chunk_tokens=48)
    blob = on_gpu.compress(DATA)
    assert blob == on_cpu.compress(DATA)  # the integer engine's tables: the same integers on every device
    assert on_cpu.decompress(blob) == DATA
    assert on_gpu.decompress(blob) == DATA
