"""Batched incremental inference: the single computation that the encoder and the decoder share.

A batch of chunks runs in lockstep, one token per row and step, through the model with a
preallocated KV cache of ``context`` slots a row (``transformer.Stepper``); chunks longer than
that run in its moving window. Logits from incremental decoding depend on the
batch size, on a row's position in the batch, on the thread count, the dtype and the kernels of
the device, so they are not a function of the text alone (see docs/FORMAT.md, "Determinism").
The encoder therefore never takes a shortcut such as a teacher-forced pass: it runs exactly the
step loop that the decoder will run, with the same rows in the same places, and records in the
file everything that shapes the computation. The decoder replays it or refuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numba
import numpy as np
import torch

from . import coder
from .errors import ReplayError
from .models import LanguageModel
from .quantize import intervals, lookups, probabilities
from .transformer import Stepper

Progress = Callable[[int], None]

# The revision of the step loop's arithmetic. Files record it; a decoder with another refuses,
# because another order of operations gives other logits.
ENGINE = "lockstep-window-kv/4"


def environment(lm: LanguageModel) -> dict:
    """What, besides the model and the coding parameters, decides the logits bit for bit."""
    import transformers  # half a second to import, so only where a float-engine file needs it

    env = {
        "engine": ENGINE,
        "device": lm.device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if lm.dtype == torch.qint8:
        env["quantized_engine"] = torch.backends.quantized.engine  # whose int8 kernels ran
    if lm.device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(lm.device)
    else:
        env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return env


def check_environment(recorded: dict, lm: LanguageModel) -> None:
    """Raise ReplayError where this process cannot rerun the recorded computation."""
    here = environment(lm)
    for key in ("engine", "device", "device_name", "cpu_capability", "quantized_engine", "torch", "transformers"):
        if recorded.get(key) != here.get(key):
            raise ReplayError(
                f"cannot replay the encoder: file made with {key}={recorded.get(key)!r}, "
                f"this environment has {key}={here.get(key)!r}"
            )


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch (and the integer engine's numba kernels) with ``n`` intra-op threads: exactly
    ``n`` as the float engine's encoder did; the integer engine's results do not depend on it."""
    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _lockstep(lm: LanguageModel, rows: int, steps: int, context: int) -> Generator:
    """Yield ``(logits, probs)`` for each step; receive the ``(rows,)`` tokens to feed next.

    Finished rows are fed the start token, by the encoder and the decoder alike. ``probs`` is one
    buffer, which the next step overwrites.
    """
    step = Stepper(lm.module, rows, min(steps, context))
    x = torch.full((rows,), lm.start_token, dtype=torch.long, device=lm.device)
    probs = None  # one buffer for every step's probabilities
    with torch.inference_mode():
        for _ in range(steps):
            logits = step(x)
            probs = probabilities(logits, out=probs)
            x = yield logits, probs


@dataclass
class EncodedBatch:
    payloads: list[bytes]
    ce_bits: np.ndarray  # float cross-entropy of each row, in bits
    ideal_bits: np.ndarray  # sum of -log2(freq / total) of each row

    @property
    def mixed_bits(self) -> np.ndarray:
        """The float engine has no mixer: its tables are the model's."""
        return self.ce_bits


def encode_batch(lm: LanguageModel, rows: list[list[int]], context: int, precision: int,
                 progress: Progress | None = None) -> EncodedBatch:
    """Code each row of token ids as an independent stream; rows share one lockstep batch."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    steps = int(lengths.max(initial=0))
    tokens = torch.full((len(rows), steps), lm.start_token, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    tokens = tokens.to(lm.device)
    active = torch.arange(steps, device=lm.device)[None, :] < torch.as_tensor(lengths, device=lm.device)[:, None]
    pairs = torch.zeros((len(rows), steps, 2), dtype=torch.int64, device=lm.device)
    ce_nats = torch.zeros(len(rows), dtype=torch.float64, device=lm.device)
    loop = _lockstep(lm, len(rows), steps, context)
    if steps:
        logits, probs = next(loop)
        for t in range(steps):
            tok = tokens[:, t]
            logp = probs.gather(-1, tok[:, None])[:, 0].double().log()
            if bool((logp == -torch.inf).any()):  # the float32 softmax underflowed: take the log domain's value
                logp = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0].double()
            ce_nats -= torch.where(active[:, t], logp, 0)
            pairs[:, t] = intervals(probs, tok, precision)
            if progress:
                progress(int(active[:, t].sum()))
            if t + 1 < steps:
                logits, probs = loop.send(tok)
    starts, freqs = pairs.cpu().numpy().transpose(2, 0, 1)
    payloads = coder.encode(starts, freqs, lengths, precision)
    mask = np.arange(steps)[None, :] < lengths[:, None]
    ideal = np.where(mask, precision - np.log2(np.maximum(freqs, 1)), 0.0).sum(axis=1)
    return EncodedBatch(payloads, ce_nats.cpu().numpy() / np.log(2), ideal)


def decode_batch(lm: LanguageModel, payloads: list[bytes], lengths: list[int], context: int, precision: int,
                 progress: Progress | None = None) -> list[list[int]]:
    """Invert ``encode_batch``: replay its lockstep loop, choosing each row's token from its stream."""
    n = len(payloads)
    lengths_np = np.array(lengths, dtype=np.int64)
    steps = int(lengths_np.max(initial=0))
    out = np.zeros((n, steps), dtype=np.int64)
    streams = coder.Decoder(payloads, precision)
    loop = _lockstep(lm, n, steps, context)
    if steps:
        _, probs = next(loop)
        for t in range(steps):
            active = t < lengths_np
            target = torch.from_numpy(streams.targets(active)).to(lm.device)
            chosen = lookups(probs, target, precision).cpu().numpy()
            streams.consume(chosen[:, 1], chosen[:, 2], active)
            out[:, t] = np.where(active, chosen[:, 0], lm.start_token)
            if progress:
                progress(int(active.sum()))
            if t + 1 < steps:
                _, probs = loop.send(torch.from_numpy(out[:, t]).to(lm.device))
    return [out[i, : lengths[i]].tolist() for i in range(n)]
