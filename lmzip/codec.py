"""The compressor: chunks in, batches through the integer engine, a container out, and back again."""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import contextlib
import ctypes
import functools
import io
import itertools
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO, Protocol

import numba
import torch
import zstandard

from . import chunking, coder, container, intmodel, kernels, mixer, models, predictor
from .chunking import Kind
from .errors import ChecksumError, ModelError, ReplayError
from .models import LanguageModel
from .quantize import DEFAULT_PRECISION, MAX_PRECISION

# The defaults trade ratio against speed and memory, on this project's 2-core CPU. Memory caps
# the KV cache at rows x context tokens (SmolLM2 in fp32: 46 KB a token): 48 x 512 kept a 5 MB
# input under the 2.5 GB the project allows (benchmarks/memory.md; 64 x 512 peaked at 2985 MB).
# Past 256 tokens of context, SmolLM2's loss on prose barely falls (see chunking.MIN_CHUNK_TOKENS),
# so a 512-token window, which predicts every token from 256 to 512 of them, costs little ratio
# while its attention stays cheap. Chunks are as long as filling the 48 rows allows
# (``chunking.chunk_length``), since each chunk starts cold. Against 512-token chunks in 48 rows
# (engine /3), that took prose/alice29.txt from 1.2776 to 1.1728 bits/byte (-8.2%) and from
# 489/467 to 321/331 B/s compress/decompress, as 21 rows of 2048 tokens replaced 41 of 512
# (benchmarks/roundtrip-smollm2-135m.md). Inputs of 48 x 2048 tokens and more keep every row busy.
# Measured again with engine int/3 and mixer mix/3 (benchmarks/context-files.md, one run on an
# AVX2 AMD EPYC; whole alice29 and 48 KB of a file of each other area): contexts of 768, 1024 and
# 2048 (4096-token chunks) spend 1.2%, 1.8% and 6.7% fewer bits than 512, at 0.97x, 0.82x and 0.55x
# its compress speed. A large input decodes 48 rows a step, and every row reads its own cache:
# the model's step took 1.22x, 1.41x and 1.97x as long as at 512 (226 ms). (Under int/2, which
# kept half the window, 1024 had saved 2.7%; int/3 already gives every token 448 of 512.) Engine
# int/2's and int/3's KV cache holds 18,360 bytes a row and slot for SmolLM2 (30 layers x 3 KV
# heads x (3 x 64 int8 + 3 int32); int/1's, with int16 mantissas, 35,640), so 48 rows take
# 0.44 GB at 512 slots, 0.88 GB at 1024 and 1.76 GB at 2048, under the 2.5 GB the project allows.
# Memory no longer decides the window; speed does: 512 stays the default, and more context is an
# option (``--context``, ``--chunk-tokens``, ``--best``).
# Longer chunks buy bits with the decoder's time, since each chunk is one of its rows
# (benchmarks/context-chunks.md, engine int/3, one run each on a shared AMD EPYC). Against
# 2048-token chunks:
#   alice29:         4096 tokens 2.0% smaller, decoded in 1.47x the time; 8192: 3.1%, 1.73x
#   hott_logic.tex:  4096 tokens 3.3% smaller, 1.24x;                      8192: 6.8%, 1.20x
# So chunks stay as short as filling the rows allows, at least 2048 tokens; ``--chunk-tokens``
# and ``--best`` trade the other way.
DEFAULT_CONTEXT = 512
# ``lmzip compress --best``: the measured curve's smallest files, with the KV cache of the defaults
# (6 rows x 4096 slots = 48 x 512), so a large input is slower still, never larger in memory.
# Under int/3 and mix/3 (benchmarks/presets.md, bench/presets.py, one run on a 2-core AMD EPYC) it
# wrote alice29 5.6% and hott_logic.tex 13.8% smaller, in 2.4x and 3.0x the compress time and 3.1x
# and 4.1x the decompress time.
BEST = {"context": 4096, "chunk_tokens": 8192, "batch_size": 6}
MIN_CONTEXT, MAX_CONTEXT = intmodel.MIN_SLOTS, intmodel.MAX_SLOTS  # the KV window a row may have
DEFAULT_BATCH_SIZE = 48
CODER = "range64"
# The float32 replay engine that lmzip ran before the integer engine: its files (format v3 and
# later, ``replay`` in the header) are named and refused; lmzip up to this commit decodes them.
FLOAT_ENGINE, LAST_FLOAT_COMMIT = "lockstep-window-kv/4", "2980941"


@dataclass
class Stats:
    """What one compression spent, from the float model bits down to the bytes on disk."""

    input_bytes: int
    output_bytes: int
    characters: int  # Unicode characters of the text chunks (len(str))
    tokens: int
    lm_chunks: int
    fallback_chunks: int
    ce_bits: float  # the model's cross-entropy of the text chunks under this chunking, before quantisation
    mixed_bits: float  # the same after the mixer (equal to ce_bits without one)
    ideal_bits: float  # sum of -log2(freq / total) under the quantised tables
    payload_bits: int  # bits the range coder wrote for the text chunks
    fallback_bytes: int  # bytes of zstd or stored chunks
    container_bytes: int  # header and chunk table
    seconds: float

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.output_bytes / max(self.input_bytes, 1)

    @property
    def bits_per_char(self) -> float:
        return 8 * self.output_bytes / max(self.characters, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "bits_per_byte": self.bits_per_byte, "bits_per_char": self.bits_per_char}

    def breakdown(self, paper_bits: float | None = None) -> list[tuple[str, float, str]]:
        """From the model's float bits to the bytes on disk: (stage, bits, what the step from the last costs)."""
        rows = []
        if paper_bits is not None:
            rows.append(("paper-method cross-entropy", paper_bits, "windows of 1900 with stride 512, theoretical"))
        rows += [
            ("model cross-entropy", self.ce_bits, "lmzip's chunks: context starts empty at each chunk, then a window"),
            ("mixed", self.mixed_bits, "online mixer: the chunk's own bias, match and order-2 models"),
            ("quantised ideal", self.ideal_bits, "integer tables: min frequency 1, rounding"),
            ("payload written", float(self.payload_bits), "range coder: truncation, under two bits a chunk to end it"),
            ("+ fallback chunks", float(self.payload_bits + 8 * self.fallback_bytes), "zstd or stored non-text"),
            ("= file", float(8 * self.output_bytes), "header and chunk table"),
        ]
        return rows


@functools.lru_cache(maxsize=4)
def _load(spec: str, device: str | None) -> LanguageModel:
    return models.load_integer(spec, device=device)


Progress = Callable[[int, int], None]  # (tokens just done, tokens in all)


def characters(data: bytes) -> int:
    """Unicode characters, as Python's len(str) counts them; each byte that is not UTF-8 counts as one."""
    return len(data.decode("utf-8", errors="surrogateescape"))


def _batches(chunks: list, size: int) -> list[list[int]]:
    """Indices of the LM chunks, in file order, split into the fewest batches of at most ``size``.

    The batches are as even as possible (sizes differ by at most one), so no batch runs nearly
    empty. Encoder and decoder both derive the layout from the chunk kinds and ``size``.
    """
    lm = [i for i, c in enumerate(chunks) if c.kind == Kind.LM]
    count = -(-len(lm) // size)
    base, extra = divmod(len(lm), max(count, 1))
    out, start = [], 0
    for b in range(count):
        end = start + base + (b < extra)
        out.append(lm[start:end])
        start = end
    return out


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), before the KV cache is allocated.

    Tokenising a large input leaves its transient buffers freed but resident: about 340 MB
    for 5 MB of text, measured beside bench/memory.py.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LMZip:
    """A compressor bound to one loaded model; reuse it to load the model once.

    ``LMZip(model).compress(data)`` and ``.decompress(blob)``. The model is a registry name,
    a model directory, a ``.gguf`` path, or an already loaded ``LanguageModel``.
    """

    def __init__(self, model: str | LanguageModel = models.DEFAULT_MODEL, *, device: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, chunk_tokens: int | None = None,
                 context: int = DEFAULT_CONTEXT, precision: int = DEFAULT_PRECISION, threads: int | None = None,
                 mix: bool | str = True, cluster: Cluster | None = None,
                 revision: str = predictor.ENGINE) -> None:
        if batch_size < 1 or (chunk_tokens is not None and chunk_tokens < 1) or not MIN_CONTEXT <= context <= MAX_CONTEXT:
            raise ValueError(f"batch_size and chunk_tokens must be at least 1, context in {MIN_CONTEXT}..{MAX_CONTEXT}")
        if isinstance(mix, str) and mix not in mixer.REVISIONS:
            raise ValueError(f"the mixer's revision must be one of {', '.join(mixer.REVISIONS)}")
        if revision not in predictor.REVISIONS:
            raise ValueError(f"the integer engine's revision must be one of {', '.join(predictor.REVISIONS)}")
        self.revision = revision  # the integer engine's arithmetic new files get: the newest, but to compare
        self.mix = mixer.REVISION if mix is True else mix or None  # a mixer revision (an older one to compare), or None
        self.lm = model if isinstance(model, LanguageModel) else _load(model, device)
        self.batch_size = batch_size
        self.chunk_tokens = chunk_tokens  # None: chunking.chunk_length decides for each input
        self.context = context
        self.precision = precision
        self.threads = threads or torch.get_num_threads()
        self.workers = Local(self) if cluster is None else cluster.workers(self)
        self.last_stats: Stats | None = None

    def compress(self, data: bytes, progress: Progress | None = None) -> bytes:
        """Compress ``data`` into a complete .lmz file."""
        out = io.BytesIO()
        with self.writer(out, progress) as w:
            w.write(data)
        return out.getvalue()

    def compress_stream(self, src: BinaryIO, dst: BinaryIO, progress: Progress | None = None) -> Stats:
        """Compress all of ``src`` into ``dst``, a frame at a time: memory stays that of one frame."""
        with self.writer(dst, progress) as w:
            while block := src.read(container.FRAME_BYTES):
                w.write(block)
        return self.last_stats

    def writer(self, dst: BinaryIO, progress: Progress | None = None) -> Encoder:
        """A writable file object that compresses into ``dst``; ``close`` writes the last frame and
        the footer (and leaves ``dst`` open)."""
        return Encoder(self, dst, progress)

    def _header(self) -> dict:
        coding = {"engine": self.revision, "coder": CODER, "precision": self.precision, "context": self.context,
                  "start_token": self.lm.start_token}
        if self.mix:
            coding["mixer"] = self.mix
        return {
            "model": {"name": self.lm.name, "fingerprint": self.lm.integer_fingerprint, "vocab": self.lm.vocab_size},
            "coding": coding,
        }

    @classmethod
    def for_header(cls, header: dict, model: str | None = None, **options) -> LMZip:
        """A codec for files with ``header``: its model (or ``model``), laid out by the decoder's
        own ``options`` (``batch_size``, ``threads``, ``device``, ``cluster``).

        A file names its model, but only a bundled model is loaded on the file's word: a path in a
        header (a directory or a ``.gguf`` the encoder was given) is opened only when the user
        names it as ``model``, so an untrusted file can never make lmzip read a place of its choosing.
        """
        _check_engine(header)
        named = header["model"]["name"]
        if model is None and named not in models.REGISTRY:
            raise ModelError(f"file was made with the model at '{named}', not a bundled one; name that model "
                             "to decode it (-m/--model): lmzip opens no path that a file names")
        return cls(model or named, **options)

    def check(self, header: dict) -> None:
        """Raise unless this codec can decode a file with ``header``: same model, an engine and coding it runs."""
        coding = header["coding"]
        _check_engine(header)
        want, have = header["model"], self.lm.integer_fingerprint
        if not have.startswith(want["fingerprint"]):  # a file keeps a prefix (container)
            raise ModelError(
                f"file was made with model '{want['name']}' (fingerprint {want['fingerprint']}), "
                f"not with '{self.lm.name}' (fingerprint {have})"
            )
        if (coding["coder"] != CODER or coding["start_token"] != self.lm.start_token
                or not MIN_CONTEXT <= coding["context"] <= MAX_CONTEXT
                or not self.lm.vocab_size.bit_length() <= coding["precision"] <= MAX_PRECISION):
            raise ReplayError(f"unsupported coding parameters: {coding}")
        if "mixer" in coding and coding["mixer"] not in mixer.REVISIONS:
            raise ReplayError(f"file was mixed by mixer '{coding['mixer']}', this build runs "
                              f"{', '.join(mixer.REVISIONS)}")

    def decompress(self, blob: bytes, progress: Progress | None = None, only: set[int] | None = None) -> bytes:
        """Decode a .lmz file, checking every checksum; ``only`` restricts it to those chunk indices
        (counted through every frame and member), and decodes only their batches."""
        return b"".join(self.iter_decompress(io.BytesIO(blob), progress, only))

    def iter_decompress(self, src: BinaryIO, progress: Progress | None = None,
                        only: set[int] | None = None) -> Iterator[bytes]:
        """Each frame's bytes in turn, once its chunks pass their checksums, from a .lmz stream.

        Concatenated files (members) decode as the concatenation of their contents; each member is
        checked against this codec's model before it decodes. A damaged frame raises once the
        frames before it are out; a member's footer check (CRC32) after its last frame.
        """
        return self._members(container.read_members(src), progress, only)

    def _members(self, members: Iterator[container.Member], progress: Progress | None,
                 only: set[int] | None) -> Iterator[bytes]:
        first, total = 0, 0  # the first chunk index of the frame, tokens of the frames seen
        step = None if progress is None else (lambda n: progress(n, total))
        for member in members:
            self.check(member.header)
            digest = container.Digest(member.version)
            for frame in member.frames():
                total += sum(e.tokens for e in frame.entries)
                local = None if only is None else {i - first for i in only if 0 <= i - first < len(frame.entries)}
                data = self._decode(member.header, frame, first, local, step)
                first += len(frame.entries)
                digest.update(data)
                yield data
            if only is None and not digest.matches(member.footer):
                raise ChecksumError(f"damaged lmzip file: the decoded data or the footer failed the footer's "
                                    f"{member.footer.algorithm.upper()}")

    def _decode(self, header: dict, frame: container.Frame, first: int, only: set[int] | None,
                step: predictor.Progress | None) -> bytes:
        """A frame's restored bytes (only of the chunks in ``only``, frame-local indices, if given),
        checked chunk by chunk; ``first`` is the index of its first chunk in the file."""
        coding = header["coding"]
        layout = [batch for batch in _batches(frame.entries, self.batch_size)
                  if only is None or only.intersection(batch)]
        jobs = [([frame.payloads[i] for i in batch], [frame.entries[i].tokens for i in batch]) for batch in layout]
        decoded = self.workers.decode(jobs, coding["context"], coding["precision"], coding.get("mixer"),
                                      coding["engine"], step)
        out: dict[int, bytes] = {}
        for batch, rows in zip(layout, decoded):
            for i, ids in zip(batch, rows):  # checked batch by batch: damage stops the decoder early
                out[i] = _checked(first + i, frame.entries[i], chunking.decode(self.lm.tokenizer, ids).encode(
                    "utf-8", errors="surrogatepass"))
        for i, (entry, payload) in enumerate(zip(frame.entries, frame.payloads)):
            if (only is None or i in only) and entry.kind != Kind.LM:
                raw = _unzstd(payload, entry.raw_size, first + i) if entry.kind == Kind.ZSTD else payload
                out[i] = _checked(first + i, entry, raw)
        return b"".join(out[i] for i in range(len(frame.entries)) if only is None or i in only)


class Encoder(io.BufferedIOBase):
    """Compresses what is written to it into ``dst``, one frame at a time: the header at once, a
    frame whenever more than ``FRAME_BYTES`` are waiting, the last frame and the footer at close.

    Where a frame ends depends only on the input bytes (``chunking.frame_end``), never on how
    they were written, so a stream and a whole buffer give the same file.
    """

    def __init__(self, lz: LMZip, dst: BinaryIO, progress: Progress | None = None) -> None:
        super().__init__()
        self.lz, self.dst, self.progress = lz, dst, progress
        self.waiting, self.crc, self.tokens_seen = bytearray(), 0, 0
        self.began = time.perf_counter()
        self.stats = Stats(0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0)
        self.head = container.head_bytes(lz._header())
        self._out(self.head, container_part=True)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed lmzip writer")
        self.waiting += data
        while len(self.waiting) > container.FRAME_BYTES:
            end = chunking.frame_end(self.waiting, container.FRAME_BYTES)
            self._frame(bytes(self.waiting[:end]))
            del self.waiting[:end]
        return memoryview(data).nbytes

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.waiting:
                self._frame(bytes(self.waiting))
            s = self.stats
            self._out(container.Footer.sealed(s.input_bytes, s.characters, self.crc).to_bytes(), True)
            s.seconds = time.perf_counter() - self.began
            self.lz.last_stats = s
        finally:
            self.waiting = bytearray()
            super().close()

    def _out(self, part: bytes, container_part: bool = False) -> None:
        self.dst.write(part)
        self.stats.output_bytes += len(part)
        self.stats.container_bytes += len(part) if container_part else 0

    def _frame(self, data: bytes) -> None:
        lz, s = self.lz, self.stats
        # enough chunks for a batch on every worker: a cluster's file is the one batch_size x count writes here
        chunks, _ = chunking.split(data, lz.lm.tokenizer, lz.chunk_tokens, lz.batch_size * lz.workers.count)
        _release_free_heap()
        self.tokens_seen += sum(len(c.tokens or ()) for c in chunks)
        step = None if self.progress is None else (lambda n: self.progress(n, self.tokens_seen))
        layout = _batches(chunks, lz.batch_size)
        jobs = [[chunks[i].tokens for i in batch] for batch in layout]
        coded = lz.workers.encode(jobs, lz.context, lz.precision, lz.mix, lz.revision, step)
        for batch, done in zip(layout, coded):
            for i, payload in zip(batch, done.payloads):
                chunks[i].payload = payload
            s.ce_bits += float(done.ce_bits.sum())
            s.mixed_bits += float(done.mixed_bits.sum())
            s.ideal_bits += float(done.ideal_bits.sum())
        frame = container.Frame([container.Entry(c.kind, len(c.tokens or ()), len(c.raw), _bits(c), zlib.crc32(c.raw))
                                 for c in chunks], [c.payload for c in chunks])
        lm = [c for c in chunks if c.kind == Kind.LM]
        self.crc = zlib.crc32(data, self.crc)
        s.input_bytes += len(data)
        s.characters += characters(data)
        s.tokens += sum(len(c.tokens) for c in lm)
        s.lm_chunks += len(lm)
        s.fallback_chunks += len(chunks) - len(lm)
        s.payload_bits += sum(_bits(c) for c in lm)
        s.fallback_bytes += sum(len(c.payload) for c in chunks if c.kind != Kind.LM)
        place = container.frame_place(self.head, s.input_bytes - len(data))
        self._out(frame.table_bytes(place), container_part=True)
        self._out(frame.payload_bytes())


class Workers(Protocol):
    """Where a frame's batches of chunks are coded: each batch's result, in order."""

    count: int  # how many batches run at once

    def encode(self, jobs: list[list[list[int]]], context: int, precision: int, mix: str | None, revision: str,
               step: predictor.Progress | None) -> Iterator[predictor.Encoded]: ...

    def decode(self, jobs: list[tuple[list[bytes], list[int]]], context: int, precision: int, mix: str | None,
               revision: str, step: predictor.Progress | None) -> Iterator[list[list[int]]]: ...


class Cluster(Protocol):
    """Workers elsewhere (``cluster.Ray``), started for a codec's model."""

    def workers(self, lz: LMZip) -> Workers: ...


class Local:
    """``Workers`` in this process, on the codec's threads, ``in_flight`` batches at once.

    On a GPU two batches are in flight, each in a thread and on a CUDA stream of its own: while one
    waits for its kernels, the other runs its host work (the coder, the mixer, launching its next
    step), so the device is not left idle between one batch's steps. On a CPU, where both would
    share the same cores, one batch runs at a time. The files are the same either way: each
    batch's integers are its own (``predictor``). Two in flight hold two batches' KV caches.
    """

    count = 1

    def __init__(self, lz: LMZip, in_flight: int | None = None) -> None:
        self.lz = lz
        on_device = lz.lm.device.type != "cpu"
        self.in_flight = in_flight or (2 if on_device and _threadsafe_numba() else 1)

    def encode(self, jobs, context, precision, mix, revision, step):
        return self._each(jobs, step, lambda pred, rows, step: pred.encode(rows, context, precision, step, mix, revision))

    def decode(self, jobs, context, precision, mix, revision, step):
        return self._each(jobs, step, lambda pred, job, step: pred.decode(*job, context, precision, step, mix, revision))

    def _each(self, jobs: list, step: predictor.Progress | None, code: Callable) -> Iterator:
        """``code(predictor, job, step)`` for each job, in order, ``in_flight`` at once, on the codec's threads."""
        pred, step = self.lz.lm.predictor(), self._serial(step)

        def one(job):
            with threads(self.lz.threads), pred.stream():
                return code(pred, job, step)
        return in_order(one, jobs, self.in_flight)

    def _serial(self, step: predictor.Progress | None) -> predictor.Progress | None:
        """``step``, called by one batch at a time."""
        if step is None or self.in_flight == 1:
            return step
        lock = threading.Lock()

        def serial(n: int) -> None:
            with lock:
                step(n)
        return serial


def in_order(fn: Callable, jobs: Iterable, depth: int) -> Iterator:
    """``fn(job)`` for each job, in order, with up to ``depth`` of them running at once on a pool of
    ``depth`` threads (``depth`` 1: one after another, here). Job ``k + depth`` starts once the
    result of job ``k`` is taken, so at most ``depth`` are running or waiting to be taken; if the
    caller stops early, the jobs not yet started never are."""
    if depth == 1:
        yield from map(fn, jobs)
        return
    with concurrent.futures.ThreadPoolExecutor(depth) as pool:
        running: collections.deque = collections.deque()
        try:
            for job in jobs:
                running.append(pool.submit(fn, job))
                if len(running) == depth:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for future in running:
                future.cancel()


def _threadsafe_numba() -> bool:
    """Whether numba's parallel kernels may run from two threads at once: its TBB and OpenMP layers
    allow it; its fallback, the workqueue layer, aborts the process. The layer is chosen at the
    first parallel kernel, so one runs first."""
    kernels.shift_rows(torch.zeros((1, 1), dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
    return numba.threading_layer() != "workqueue"


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch (in every thread) and numba (in this one) with ``n`` intra-op threads; the tables
    do not depend on it."""
    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _checked(index: int, entry: container.Entry, data: bytes) -> bytes:
    """A chunk's decoded bytes, once they match its size and CRC in the table."""
    if len(data) != entry.raw_size or zlib.crc32(data) != entry.crc:
        raise ChecksumError(f"chunk {index} failed its checksum: the file is damaged or was not decoded "
                            "as it was encoded")
    return data


def _check_engine(header: dict) -> None:
    """Raise ReplayError, naming it, unless the file's engine revision is one this lmzip runs."""
    name = header["coding"]["engine"]
    if name == FLOAT_ENGINE:
        raise ReplayError(f"file was made by lmzip's float engine ({FLOAT_ENGINE}), which this lmzip no longer "
                          f"runs; lmzip up to commit {LAST_FLOAT_COMMIT} decodes it where it was written")
    if name not in predictor.REVISIONS:
        raise ReplayError(f"file was made by engine '{name}', which this lmzip does not run "
                          f"(it runs {', '.join(predictor.REVISIONS)})")


def _bits(chunk: chunking.Chunk) -> int:
    """A coded chunk is stored up to its last 1 bit; zstd and stored chunks whole."""
    return coder.bit_length(chunk.payload) if chunk.kind == Kind.LM else 8 * len(chunk.payload)


def _unzstd(payload: bytes, size: int, index: int) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ChecksumError(f"chunk {index} is damaged: {exc}") from None


def compress(data: bytes, model: str = models.DEFAULT_MODEL, **options) -> bytes:
    """Compress ``data`` with ``model``; options as for ``LMZip``. Loaded models are cached."""
    return LMZip(model, **options).compress(data)


def decompress(blob: bytes, model: str | None = None, **options) -> bytes:
    """Decompress a .lmz file with the model it names (or ``model``, a path to the same model);
    ``options`` (``batch_size``, ``threads``, ``device``, ``cluster``) lay out the integer engine's decoding."""
    return b"".join(iter_decompress(io.BytesIO(blob), model, **options))


def iter_decompress(src: BinaryIO, model: str | None = None, progress: Progress | None = None,
                    **options) -> Iterator[bytes]:
    """Each frame's bytes in turn from a .lmz stream, with the model its first member names (or
    ``model``); ``options`` as for ``decompress``."""
    members = container.read_members(src)
    first = next(members)
    lz = LMZip.for_header(first.header, model, **options)
    return lz._members(itertools.chain([first], members), progress, None)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temporary file beside it, renamed into place once the
    block succeeds and removed if it fails, so no partial file is ever left at ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Decoded(io.RawIOBase):
    """A readable file over the pieces ``iter_decompress`` yields."""

    def __init__(self, pieces: Iterator[bytes], closing: BinaryIO) -> None:
        self.pieces, self.closing, self.held = pieces, closing, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.held:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.held = memoryview(piece)
        n = min(len(buffer), len(self.held))
        buffer[:n] = self.held[:n]
        self.held = self.held[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.closing.close()
        super().close()


class _Writing(Encoder):
    """``open(path, 'wb')``: an Encoder into a temporary file, renamed to ``path`` on close."""

    def __init__(self, path, lz: LMZip) -> None:
        self._output = atomic_output(path)
        super().__init__(lz, self._output.__enter__())

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        except BaseException as exc:
            self._output.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._output.__exit__(None, None, None)


def open(path: str | os.PathLike, mode: str = "rb", model: str | None = None, **options) -> io.BufferedIOBase:
    """Like ``gzip.open`` for binary modes, streaming: 'rb' decodes a frame at a time as it is
    read (with the bundled model the file names, or ``model``); 'wb' compresses with ``model``
    (default: the default model) each frame as enough is written, and renames the finished file
    into place on close."""
    if mode in ("r", "rb"):
        f = builtins.open(path, "rb")
        try:
            return io.BufferedReader(_Decoded(iter_decompress(f, model, **options), f))
        except BaseException:
            f.close()
            raise
    if mode in ("w", "wb"):
        return _Writing(path, LMZip(model or models.DEFAULT_MODEL, **options))
    raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")
