"""Compression on a local Ray cluster with 1 and 2 workers, beside this process alone, in one run.

    python bench/cluster.py [--bytes 24000] [--batch-size 2]

Writes benchmarks/cluster.md: wall time of ``LMZip.compress`` and ``decompress`` on the first
``--bytes`` of alice29 (actors started and warmed first, not timed), every file compared byte for
byte with the one this process writes, and a cluster's throughput projected from the per-worker
figure. ``--batch-size`` splits the chunks into several batches, so that there is work for each
worker; the integer engine's files do not depend on it.
"""

from __future__ import annotations

import argparse
import time

import ray
from common import CORPUS, provenance, write

import lmzip
from lmzip import cluster


def _timed(fn):
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, default=24000)
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()
    data = (CORPUS / "prose" / "alice29.txt").read_bytes()[: args.bytes]
    here = lmzip.LMZip(batch_size=args.batch_size)
    want, c_s = _timed(lambda: here.compress(data))
    back, d_s = _timed(lambda: here.decompress(want))
    assert back == data
    rows = [("this process (torch threads: all cores)", c_s, d_s)]
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    for n in (1, 2):
        lz = lmzip.LMZip(batch_size=args.batch_size, cluster=cluster.Ray(workers=n))
        lz.compress(data[:300])  # the actors load the model and compile their kernels
        blob, c_s = _timed(lambda: lz.compress(data))
        assert blob == want, "a cluster wrote another file"
        back, d_s = _timed(lambda: lz.decompress(blob))
        assert back == data
        rows.append((f"Ray, {n} worker{'s' * (n > 1)} of one CPU", c_s, d_s))
        lz.workers.stop()
    ray.shutdown()
    one = rows[1]
    lines = ["# lmzip on a local Ray cluster", "", provenance(), "",
             f"The first {len(data)} bytes of alice29, batch size {args.batch_size} ({here.last_stats.lm_chunks} "
             "chunks), the default model and coding; every file equal to this process's, byte for byte.", "",
             "| where | compress s | decompress s | compress B/s | decompress B/s | compress vs 1 worker |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, c, d in rows:
        lines.append(f"| {name} | {c:.1f} | {d:.1f} | {len(data) / c:.0f} | {len(data) / d:.0f} | {one[1] / c:.2f}x |")
    lines += ["", f"Projected as an upper bound, from one worker's rate and perfect scaling over batches: N one-CPU "
              f"workers compress at most about N x {len(data) / one[1]:.0f} B/s and decompress at most about "
              f"N x {len(data) / one[2]:.0f} B/s, given an input of at least N batches; the measured 2-worker row "
              "shows how far this machine falls short of it."]
    write("cluster.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
