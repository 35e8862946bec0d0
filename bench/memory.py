"""Peak resident memory of `lmzip compress` on a 5 MB file: the corpus joined and repeated.

    python bench/memory.py [--size-mb 5] [--steps 640] [--model smollm2-135m]

Runs ``LMZip.compress`` (what ``lmzip compress`` runs) in a child process that reports its
progress, and samples the child's RSS every 50 ms. The input is in memory (the call takes
bytes); each frame of at most 4 MiB is tokenised and its batches of at most ``batch_size``
chunks are coded one after another, a group of rows at a time in a KV cache of ``context``
slots a row that the window reuses, so memory peaks early in the first batch. On a 2-core CPU the whole 5 MB would take hours, so the run is
stopped after ``--steps`` steps of the first batch, and the report says so; ``--steps 0`` runs
to the end. Writes benchmarks/memory.md."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import corpus_files, provenance, rss, write

import lmzip
from lmzip import codec as lmzip_codec

CHILD = """
import sys, lmzip
done = 0
def progress(advance, total):
    global done
    done += advance
    print(done, total, file=sys.stderr, flush=True)
data = open(sys.argv[1], "rb").read()
lmzip.LMZip(sys.argv[2]).compress(data, progress)
"""


def _follow(stream, last: list[str]) -> None:
    """Keep the child's latest progress line ("done total") in ``last[0]``."""
    for line in stream:
        if line[:1].isdigit():
            last[0] = line.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=5)
    ap.add_argument("--steps", type=int, default=lmzip_codec.DEFAULT_CONTEXT + 128,
                    help="stop once every row of the first batch has coded this many tokens (0: run to the end); "
                         "the default runs past the context window's first move")
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    args = ap.parse_args()
    corpus = b"".join(p.read_bytes() for p in corpus_files())
    size = int(args.size_mb * 1e6)
    data = (corpus * (size // len(corpus) + 1))[:size]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.txt"
        src.write_bytes(data)
        stop = lmzip_codec.DEFAULT_BATCH_SIZE * args.steps
        cmd = [sys.executable, "-c", CHILD, str(src), args.model]
        began = time.perf_counter()
        child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, bufsize=1)
        peak, stopped, last = 0, False, [""]
        threading.Thread(target=_follow, args=(child.stderr, last), daemon=True).start()
        while child.poll() is None:
            try:
                peak = max(peak, rss(child.pid))
            except OSError:  # it ended between poll and read
                break
            progress = last[0]
            done = int(progress.split()[0]) if progress else 0
            if args.steps and done >= stop:
                child.kill()
                stopped = True
                break
            time.sleep(0.05)
        child.wait()
        seconds = time.perf_counter() - began
    if not stopped and child.returncode != 0:
        raise SystemExit(f"compress failed ({child.returncode})")
    done, total = last[0].split()
    outcome = (f"stopped after {args.steps} steps of the first batch: {done} of {total} tokens coded"
               if stopped else "ran to the end")
    md = ["# Peak memory compressing a large file", "",
          f"`LMZip.compress` (default settings: batch {lmzip_codec.DEFAULT_BATCH_SIZE}, context "
          f"{lmzip_codec.DEFAULT_CONTEXT} tokens, model {args.model}) on {len(data)} bytes: the corpus joined "
          f"and repeated. RSS of the process sampled every 50 ms.", "",
          "| input bytes | peak RSS MB (10^6 bytes) | MiB | seconds | run |", "|---:|---:|---:|---:|---|",
          f"| {len(data)} | {peak / 1e6:.0f} | {peak / 2**20:.0f} | {seconds:.0f} | {outcome} |", "",
          "The input is in memory (the call takes bytes); each frame of at most "
          f"{lmzip.container.FRAME_BYTES} bytes is tokenised before it is coded (the token ids, and the tokenizer's "
          "Rust encoding while the chunks are cut). The integer engine then scores a group of rows at a time in blocks of half "
          "its window, coding each block's tables at once; the group's KV cache is reused however long the "
          "chunks, so neither later blocks nor later groups raise the peak.", "",
          provenance(), ""]
    write("memory.md", "\n".join(md))


if __name__ == "__main__":
    main()
