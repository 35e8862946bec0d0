"""The integer predictor between the model and the coder, and the batch loops that use it.

A ``Predictor`` starts rows, feeds them tokens (a whole block at once, or one a step) and hands
out the coder's integers: a token's ``(start, freq)`` when encoding, the symbol holding a
target when decoding. Its tables are a function of the model and each row's own tokens, never
of the batch, the block length, the thread count or the kernel (``intmodel``, ``exact``), so
the encoder and the decoder lay out their work as they like:

- the encoder scores each chunk teacher-forced, a group of chunks at a time, in blocks as long
  as the window allows (prefill);
- the decoder steps its own batch of chunks one token at a time, at any batch size.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import coder, exact, intmodel, mixer
from .intmodel import Cache, IntModel, Runner
from .quantize import int_intervals, int_lookups

Progress = Callable[[int], None]

# The revisions of the integer arithmetic, by the KV cache they keep and how its window moves
# (docs/FORMAT.md). Files record theirs; each revision computes its own tables, and every one
# listed here still decodes. New files get ENGINE. int/3 keeps 7/8 of the window where int/2 kept
# half, so a token sees 448 to 512 tokens of a 512-slot window, not 256 to 512: 1.02% fewer bits
# after the mixer over the first 16,000 bytes of every corpus file, each file 0.39% to 1.52%
# (benchmarks/revision-int3-int2.md). The cost is the encoder's: its prefill blocks end where
# the window moves, every 63 tokens, not every 255, so its GEMMs are shorter and each block
# converts the cache for attention again: compress took 1.15x int/2's time side by side (per
# file 0.93x to 1.56x on a shared machine), decompress 0.99x.
REVISIONS = {"int/1": intmodel.Revision(intmodel.KV16, 4), "int/2": intmodel.Revision(intmodel.KV8, 4),
             "int/3": intmodel.Revision(intmodel.KV8, 7)}
ENGINE = "int/3"
PREFILL_TOKENS = 2048  # the encoder's group of rows holds about this many tokens of window
# Rows of logits built at once: (64, 49152) int64 is 25 MB, under glibc's 32 MB ceiling for mmap,
# so the arrays of one block are reused by the next. At 256 rows (100 MB) every block took fresh
# pages: compressing 24 KB faulted 2.5-3.0 million pages, not 0.7-0.9 million (one run each way,
# alternating, on an Ice Lake Xeon).
HEAD_TOKENS = 64
# Off a CPU, every block and every head call costs a few hundred kernel launches and a wait for
# the host, whatever its size, so both are larger there: a group of 64 rows at the default
# 512-token window (a 16,384-token block, whose float64 scores take 600 MB), and 1024 rows of
# logits (200 MB for SmolLM2). Chosen from those memory bounds, not yet from a GPU's timings
# (bench/gpu_check.sh measures them).
DEVICE_PREFILL_TOKENS, DEVICE_HEAD_TOKENS = 32768, 1024


@dataclass
class Encoded:
    payloads: list[bytes]
    ce_bits: np.ndarray  # cross-entropy of each row under the model's integer softmax P / sum(P)
    mixed_bits: np.ndarray  # the same after mixing (``ce_bits`` without a mixer), before quantisation
    ideal_bits: np.ndarray  # sum of -log2(freq / total) of each row


class Predictor:
    """An ``IntModel`` on a device, with the fastest exact GEMM found there (``exact.choose``, which
    keeps its timings in ``memo`` where given)."""

    def __init__(self, model: IntModel, device: torch.device, start_token: int, memo: Path | None = None) -> None:
        shapes = {lin.q.shape for lin in [model.head] + [getattr(layer, name) for layer in model.layers
                                                           for name in ("q", "k", "v", "o", "gate", "up", "down")]}
        self.gemm = exact.choose(shapes, device, memo=memo)
        self.model, self.device, self.start_token = model, device, start_token
        self.runner = Runner(model, self.gemm, device)
        self._streams: queue.SimpleQueue = queue.SimpleQueue()  # CUDA streams not lent now (``stream``)
        on_cpu = device.type == "cpu"
        self.prefill_tokens = PREFILL_TOKENS if on_cpu else DEVICE_PREFILL_TOKENS
        self.head_tokens = HEAD_TOKENS if on_cpu else DEVICE_HEAD_TOKENS

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """On a GPU, a CUDA stream of the caller's own for the work in the block, so that batches
        coded at once from several threads (``codec.Local``) each wait only for their own kernels.
        Streams are lent and taken back, never made anew for each batch: the allocator keeps
        freed memory for the stream that used it, so a new stream could not reuse the last one's."""
        if self.device.type != "cuda":
            yield
            return
        try:
            lent = self._streams.get_nowait()
        except queue.Empty:
            lent = torch.cuda.Stream(self.device)
        try:
            with torch.cuda.stream(lent):
                yield
        finally:
            self._streams.put(lent)

    def start(self, rows: int, slots: int, revision: str = ENGINE) -> Cache:
        """A fresh window for ``rows`` chunks, as ``revision`` keeps it; the first token fed is each
        row's start token."""
        return Cache(self.model, rows, slots, self.device, REVISIONS[revision])

    def feed(self, cache: Cache, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (R, T)`` after what ``cache`` holds: the states ``(R, T, D)``, ``(R, T)`` that predict the next."""
        with torch.inference_mode():
            return self.runner.forward(tokens.to(self.device), cache)

    def _logits(self, m: torch.Tensor, e: torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(N, V)`` logits: a numpy array for the CPU's numba kernels, else a tensor left on its
        device, where the mixer's statistics and the tables are computed (only a few integers a
        token leave it)."""
        with torch.inference_mode():
            logits = self.runner.logits(m, e)
        return logits.numpy() if self.runner.fused else logits

    @property
    def _exp(self) -> np.ndarray | torch.Tensor:
        """The logits' exp table, where ``_logits`` leaves them (numba's array, or the device's copy)."""
        return self.model.logit_exp if self.runner.fused else self.runner.t["logit_exp"]

    def intervals(self, m: torch.Tensor, e: torch.Tensor, tokens: np.ndarray, precision: int,
                  mixing: mixer.State | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """``(N, 6)`` ``(start, freq, P, sum P)`` of ``tokens (N,)`` under the tables of states
        ``(N, D)``, ``(N,)``, then ``(P, sum P)`` before mixing; ``mixing`` mixes each table, which
        predicts the next token of row ``rows[i]``, and learns the token."""
        out = np.empty((len(tokens), 6), dtype=np.int64)
        for a in range(0, len(tokens), self.head_tokens):
            b = a + self.head_tokens
            logits = self._logits(m[a:b], e[a:b])
            if mixing is not None:
                out[a:b, 4:] = mixer.observe(mixing, logits, rows[a:b], tokens[a:b], self._exp)
            out[a:b, :4] = int_intervals(logits, tokens[a:b], self._exp, precision)
            if mixing is None:
                out[a:b, 4:] = out[a:b, 2:4]
        return out

    def lookups(self, m: torch.Tensor, e: torch.Tensor, targets: np.ndarray, precision: int,
                mixing: mixer.State | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """``(N, 3)``: the symbol whose interval holds each target, then its start and freq; with
        ``mixing``, under mixed tables (row ``i`` the next token of row ``rows[i]``), learning the symbols."""
        logits = self._logits(m, e)
        if mixing is not None:
            mixer.predict(mixing, logits, rows, self._exp)
        out = int_lookups(logits, targets, self._exp, precision)
        if mixing is not None:
            mixer.learn(mixing, rows, out[:, 0])
        return out

    def encode(self, rows: list[list[int]], slots: int, precision: int, progress: Progress | None = None,
               mix: str | None = None, revision: str = ENGINE) -> Encoded:
        """Code each row of token ids as an independent stream, scored teacher-forced in blocks by
        the arithmetic of ``revision``.

        A group of rows is fed ``slots // 2`` tokens a block; each block's tables are coded at
        once, and a row leaves the group when it ends, so neither the states nor short rows'
        padding grow with the chunk length. ``mix``, a revision of the mixer, runs each row's
        tables through it.
        """
        group, piece = max(1, self.prefill_tokens // slots), max(1, slots // 2)
        payloads, ce, mixed, ideal = [], [], [], []
        for g in range(0, len(rows), group):
            part = rows[g : g + group]
            lengths = np.array([len(r) for r in part], dtype=np.int64)
            steps = int(lengths.max(initial=0))
            fed = np.full((len(part), steps), self.start_token, dtype=np.int64)  # start, then each token but the last
            want = np.zeros((len(part), steps), dtype=np.int64)
            for i, r in enumerate(part):
                fed[i, 1 : len(r)] = r[:-1]
                want[i, : len(r)] = r
            pairs = np.ones((len(part), steps, 6), dtype=np.int64)
            cache, alive = self.start(len(part), slots, revision), np.arange(len(part))
            mixing = mixer.State.fresh(len(part), steps, self.model.vocab, mix) if mix else None
            for pos in range(0, steps, piece):
                alive = _leave(cache, alive, lengths, pos)
                m, e = self.feed(cache, torch.from_numpy(fed[alive, pos : pos + piece]))  # (A, T, D), (A, T)
                i, t = np.nonzero(pos + np.arange(m.shape[1])[None, :] < lengths[alive, None])  # live tokens
                at = torch.from_numpy(i), torch.from_numpy(t)
                row, col = alive[i], pos + t
                pairs[row, col] = self.intervals(m[at], e[at], want[row, col], precision, mixing, row)
                if progress:
                    progress(len(i))
            starts, freqs = np.ascontiguousarray(pairs[..., 0]), np.ascontiguousarray(pairs[..., 1])
            payloads += coder.encode(starts, freqs, lengths, precision)
            live = np.arange(steps)[None, :] < lengths[:, None]
            ideal.append(np.where(live, precision - np.log2(freqs), 0.0).sum(axis=1))
            ce.append(_bits(pairs[..., 4], pairs[..., 5], live))
            mixed.append(_bits(pairs[..., 2], pairs[..., 3], live))
        join = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
        return Encoded(payloads, join(ce), join(mixed), join(ideal))

    def decode(self, payloads: list[bytes], lengths: list[int], slots: int, precision: int,
               progress: Progress | None = None, mix: str | None = None, revision: str = ENGINE) -> list[list[int]]:
        """Invert ``encode`` for one batch of streams, stepping the rows a token at a time; a row
        leaves the batch when it ends."""
        n = len(payloads)
        lengths_np = np.array(lengths, dtype=np.int64)
        steps = int(lengths_np.max(initial=0))
        out = np.zeros((n, steps), dtype=np.int64)
        streams = coder.Decoder(payloads, precision)
        cache, alive = self.start(n, slots, revision), np.arange(n)
        mixing = mixer.State.fresh(n, steps, self.model.vocab, mix) if mix else None
        x = np.full(n, self.start_token, dtype=np.int64)
        for t in range(steps):
            alive = _leave(cache, alive, lengths_np, t)
            m, e = self.feed(cache, torch.from_numpy(x[alive, None]))
            active = lengths_np > t
            targets = streams.targets(active)
            chosen = np.zeros((n, 3), dtype=np.int64)
            chosen[alive] = self.lookups(m[:, 0], e[:, 0], targets[alive], precision, mixing, alive)
            streams.consume(chosen[:, 1], chosen[:, 2], active)
            x = chosen[:, 0]
            out[:, t] = x
            if progress:
                progress(len(alive))
        return [out[i, : lengths[i]].tolist() for i in range(n)]


def _bits(p: np.ndarray, whole: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Each row's sum of ``log2(whole / p)`` over its live tokens; a ``p`` the exp table rounds to 0
    counts as half a unit."""
    return np.where(live, np.log2(whole / np.maximum(p, 0.5)), 0.0).sum(axis=1)


def _leave(cache: Cache, alive: np.ndarray, lengths: np.ndarray, pos: int) -> np.ndarray:
    """The rows of ``alive`` (indices into ``lengths``) that go on past ``pos``; the others leave ``cache``."""
    going = lengths[alive] > pos
    if not going.all():
        cache.keep_rows(torch.from_numpy(np.nonzero(going)[0]))
    return alive[going]


def build(module: torch.nn.Module, device: torch.device, start_token: int) -> Predictor:
    """Quantise a transformers model for the integer engine and place it on ``device``."""
    return Predictor(intmodel.IntModel.from_module(module), device, start_token)
