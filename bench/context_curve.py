"""What context is worth: the model's loss against how much context a token has, and the integer
engine's file bits and speed against its KV window.

    python bench/context_curve.py [--parts position files chunks] [--model smollm2-135m] [--window 2048] [--per-area 8]
                                  [--contexts 256 512 1024 2048 4096]

From each corpus area, ``--per-area`` windows of ``--window`` tokens (spread evenly over the
area's files) are scored teacher-forced from the start token, in float32. The mean bits a token
at each position, against the mean deep in the window (positions 512 and on), give the excess
a chunk pays for starting with no context. That excess, with the chunk table's bytes, is what
lmzip's minimum chunk length (``chunking.MIN_CHUNK_TOKENS``) and its 512-token context window
(``codec.DEFAULT_CONTEXT``, which keeps at least 256 tokens) are chosen from. Writes
benchmarks/context-curve.csv and .md.

The ``files`` part compresses whole alice29 and the first ``FILE_SAMPLE`` bytes of one file of each
other area with the integer engine at each context of ``--contexts`` (chunks of at least twice the
context, so that the window slides), side by side in one run, and decodes one chunk of the first
``DECODE_SAMPLE`` bytes of alice29 at each: file bits per byte, compress and decompress bytes a
second. Writes benchmarks/context-files.csv and .md.

The ``chunks`` part round-trips whole files (``CHUNK_FILES``) at the default context with chunks of
each length of ``CHUNK_LENGTHS``, one after the other in one run, each decoded again by a fresh
codec and compared byte for byte: what a longer chunk saves (fewer cold starts, more history for
the mixer) against what it costs the decoder, whose parallelism is the number of chunks. Writes
benchmarks/context-chunks.csv and .md.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from common import CORPUS, provenance, round_trip, write, write_csv

import lmzip
from lmzip import chunking

BUCKETS = [(0, 64), (64, 128), (128, 256), (256, 384), (384, 512), (512, 1024), (1024, 2048)]
DEEP = 512  # positions from here on count as "deep in the text"
CONTEXTS = [256, 512, 1024, 2048, 4096]
SAMPLES = ["prose/alice29.txt", "code/click_core.py", "math/hott_basics.tex", "web/html"]
FILE_SAMPLE = 48000  # bytes of each sample but alice29, which is whole
DECODE_SAMPLE = 12000  # bytes of alice29 decoded as one chunk (one row) at each context
CHUNK_LENGTHS = [chunking.MIN_CHUNK_TOKENS, 4096, 8192]
CHUNK_FILES = ["prose/alice29.txt", "math/hott_logic.tex"]


def windows(lm, area: str, count: int, length: int) -> list[list[int]]:
    """``count`` windows of ``length`` tokens, spread evenly over the area's files."""
    ids = [lm.tokenizer.encode(p.read_text(encoding="utf-8"), add_special_tokens=False)
           for p in sorted((CORPUS / area).glob("*"))]
    spans = [(f, s) for f, t in enumerate(ids) for s in range(0, len(t) - length, length)]
    picks = np.linspace(0, len(spans) - 1, count).round().astype(int)
    return [ids[spans[i][0]][spans[i][1] : spans[i][1] + length] for i in picks]


@torch.inference_mode()
def position_bits(lm, rows: list[list[int]]) -> np.ndarray:
    """Mean bits of each position over the rows, each scored from the start token."""
    out = []
    for r in rows:
        x = torch.tensor([[lm.start_token, *r]], device=lm.device)
        logits = lm.module(input_ids=x[:, :-1]).logits[0].float()
        out.append((-torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0] / math.log(2)).cpu().numpy())
    return np.mean(out, axis=0)


def position_curve(args) -> None:
    """The float model's mean bits at each position of the window: benchmarks/context-curve.*"""
    lm = lmzip.load(args.model)
    areas = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    rows = []
    for area in areas:
        bits = position_bits(lm, windows(lm, area, args.per_area, args.window))
        deep = float(bits[DEEP:].mean())
        row = {"area": area, "windows": args.per_area, "deep_bits_per_token": round(deep, 3)}
        for a, b in BUCKETS:
            row[f"bits_{a}_{b}"] = round(float(bits[a:b].mean()), 3)
        for n in (256, 512):
            row[f"excess_bits_first_{n}"] = round(float((bits[:n] - deep).sum()))
        rows.append(row)
        print(row, flush=True)
    write_csv("context-curve.csv", rows)
    md = [f"# Loss against context, {args.model}", "",
          f"Mean bits a token at each position of {args.per_area} windows of {args.window} tokens an area, "
          "scored teacher-forced from the start token (float32). deep = the mean from position "
          f"{DEEP} on; excess = the bits the first positions cost above deep: what each chunk pays for "
          "starting with no context.", "",
          "| area | " + " | ".join(f"{a}-{b}" for a, b in BUCKETS) + " | deep | excess, first 256 | excess, first 512 |",
          "|---|" + "---:|" * (len(BUCKETS) + 3)]
    for r in rows:
        md.append(f"| {r['area']} | " + " | ".join(f"{r[f'bits_{a}_{b}']:.3f}" for a, b in BUCKETS)
                  + f" | {r['deep_bits_per_token']:.3f} | {r['excess_bits_first_256']} | {r['excess_bits_first_512']} |")
    md += ["", provenance(), ""]
    write("context-curve.md", "\n".join(md))


def _timed(fn):
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


@torch.inference_mode()
def step_ms(lm, rows: int, context: int) -> float:
    """The model's mean decoder step (feed only: no head, mixer or coder), ``rows`` rows, over the
    positions from a window just moved to a full one: the part of a step that grows with the
    context, since every row reads its own cache. The cache holds random keys and values in
    full range, which cost what real ones do."""
    p = lm.predictor()
    cache = p.start(rows, context)
    gen = torch.Generator().manual_seed(0)
    for name in ("k", "v"):
        for layer in getattr(cache, name):
            layer.copy_(torch.randint(-127, 128, layer.shape, generator=gen, dtype=torch.int8))
    cache.ke.fill_(-20)
    cache.ve.fill_(-20)
    cache.used = cache.keep + 1
    tokens = torch.randint(2, p.model.vocab, (rows, context - cache.used), generator=gen)
    p.feed(cache, tokens[:, :1])  # untimed: the first step makes the cache's numpy views
    began = time.perf_counter()
    for t in range(1, tokens.shape[1]):
        p.feed(cache, tokens[:, t : t + 1])
    return 1e3 * (time.perf_counter() - began) / (tokens.shape[1] - 1)


def file_curve(args) -> None:
    """The integer engine's file bits and speed at each context: benchmarks/context-files.*"""
    samples = {name: (CORPUS / name).read_bytes()[: None if name.startswith("prose/alice29") else FILE_SAMPLE]
               for name in SAMPLES}
    head = (CORPUS / SAMPLES[0]).read_bytes()[:DECODE_SAMPLE]
    lm = None  # the integer model, loaded by the first codec
    rows = []
    for context in args.contexts:
        lz = lmzip.LMZip(lm or args.model, context=context,
                         chunk_tokens=None if 2 * context <= chunking.MIN_CHUNK_TOKENS else 2 * context)
        lm = lz.lm
        lz.compress(head[:500])  # the predictor is built, and its kernels loaded, before any timing
        row = {"context": context, "chunk_tokens": lz.chunk_tokens or chunking.MIN_CHUNK_TOKENS}
        total_in = total_out = seconds = 0
        for name, data in samples.items():
            blob, s = _timed(lambda: lz.compress(data))
            row[f"bpb {name}"] = round(8 * len(blob) / len(data), 4)
            total_in, total_out, seconds = total_in + len(data), total_out + len(blob), seconds + s
        row["bpb all"] = round(8 * total_out / total_in, 4)
        row["compress B/s"] = round(total_in / seconds)
        one = lmzip.LMZip(lz.lm, context=context, chunk_tokens=chunking.MIN_CHUNK_TOKENS * 2)
        blob = one.compress(head)
        back, s = _timed(lambda: one.decompress(blob))
        assert back == head, f"context {context}: the round trip differs"
        row["decompress B/s, one row"] = round(len(head) / s)
        row[f"step ms, {lz.batch_size} rows"] = round(step_ms(lz.lm, lz.batch_size, context), 1)
        cache = lz.lm.predictor().start(1, context)
        row[f"KV cache MB, {lz.batch_size} rows"] = round(lz.batch_size * sum(
            getattr(cache, name).nbytes for name in cache.NAMES) / 1e6)
        rows.append(row)
        print(row, flush=True)
    write_csv("context-files.csv", rows)
    cols = list(rows[0])
    md = [f"# File bits and speed against context, {args.model}, integer engine", "",
          "Compressed at the defaults but for `--context` (and, past 1024, chunks of twice the context): whole "
          f"alice29 and the first {FILE_SAMPLE} bytes of each other sample, one after the other in one run; "
          "bits per byte of the whole file (header, table and mixer included). Compress speed is over all "
          f"samples. Decompress speed: the first {DECODE_SAMPLE} bytes of alice29 as one chunk "
          f"({chunking.MIN_CHUNK_TOKENS * 2} tokens at most, so one row), decoded and compared byte for byte. "
          "Step: the model's mean decoder step for a default batch of rows (feed only: no head, mixer or "
          "coder), over the positions from a window just moved to a full one, with random keys and values "
          "in the cache; a large input decodes at about that many rows. "
          "KV cache: the engine's window for a default batch of rows.", "",
          "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    md += ["", provenance(), ""]
    write("context-files.md", "\n".join(md))


def chunk_curve(args) -> None:
    """File bits and round-trip times against the chunk length: benchmarks/context-chunks.*"""
    lm, rows = None, []
    for name in CHUNK_FILES:
        data = (CORPUS / name).read_bytes()
        for n in CHUNK_LENGTHS:
            lz = lmzip.LMZip(lm or args.model, chunk_tokens=n)
            if lm is None:
                lz.compress(data[:500])  # the predictor is built, and its kernels loaded, before any timing
            lm = lz.lm
            r = round_trip(lz, data)
            default = chunking.chunk_length(r["tokens"], lz.batch_size) == n
            row = {"file": name, "chunk_tokens": f"{n} (default)" if default else n,
                   "chunks": lz.last_stats.lm_chunks, "tokens": r["tokens"],
                   "lmz_bytes": r["bytes"], "bits/byte": round(8 * r["bytes"] / len(data), 4),
                   "model_bits": r["model_bits"], "mixed_bits": r["mixed_bits"],
                   "compress_s": round(r["compress_s"], 1), "decompress_s": round(r["decompress_s"], 1)}
            rows.append(row)
            print(row, flush=True)
    write_csv("context-chunks.csv", rows)
    cols = list(rows[0]) + ["bytes vs first", "compress time vs first", "decompress time vs first"]
    md = [f"# File bits and speed against chunk length, {args.model}, integer engine", "",
          f"Whole files compressed at the defaults (context {lmzip.codec.DEFAULT_CONTEXT}, batch "
          f"{lmzip.codec.DEFAULT_BATCH_SIZE}) but for `--chunk-tokens`, one after the other in one run, each "
          "decoded again by a fresh codec at the default batch size and compared byte for byte. Each chunk "
          "starts cold (model and mixer) and is a row of the decoder: longer chunks pay fewer cold starts and "
          "leave the decoder fewer rows to step at once. \"vs first\": against the same file's first row. "
          "Times are wall clock on a shared machine, one run each.", "",
          "| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for r in rows:
        first = next(f for f in rows if f["file"] == r["file"])
        ratios = [r["lmz_bytes"] / first["lmz_bytes"], r["compress_s"] / first["compress_s"],
                  r["decompress_s"] / first["decompress_s"]]
        md.append("| " + " | ".join([str(r[c]) for c in rows[0]] + [f"{x:.3f}" for x in ratios]) + " |")
    md += ["", provenance(), ""]
    write("context-chunks.md", "\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", choices=["position", "files", "chunks"],
                    default=["position", "files", "chunks"])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--per-area", type=int, default=8)
    ap.add_argument("--contexts", type=int, nargs="+", default=CONTEXTS, help="the files part's KV windows")
    args = ap.parse_args()
    if "position" in args.parts:
        position_curve(args)
    if "files" in args.parts:
        file_curve(args)
    if "chunks" in args.parts:
        chunk_curve(args)


if __name__ == "__main__":
    main()
