"""Compression on a local Ray cluster with 1 and 2 workers, beside this process alone, in one run.

    python bench/cluster.py [--bytes 24000] [--batch-size 1]

Writes benchmarks/cluster.md: wall time of ``LMZip.compress`` and ``decompress`` on the first
``--bytes`` of alice29 (actors started and warmed first, not timed), every file compared byte for
byte with the one this process writes, the measured scaling, and a cluster's throughput projected
from the per-worker figure.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--batch-size", type=int, default=1)
    args = ap.parse_args()
    data = (CORPUS / "prose" / "alice29.txt").read_bytes()[: args.bytes]
    rows = []
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    for n in (1, 2):
        here = lmzip.LMZip(batch_size=args.batch_size * n)  # the file n workers write: n batches of chunks
        want, c_s = _timed(lambda: here.compress(data))
        stats = here.last_stats
        back, d_s = _timed(lambda: here.decompress(want))
        assert back == data
        rows.append((f"this process, batch size {here.batch_size} (torch threads: all cores)", stats, c_s, d_s))
        lz = lmzip.LMZip(batch_size=args.batch_size, cluster=cluster.Ray(workers=n))
        lz.decompress(lz.compress(data))  # every actor loads the model and its compiled kernels
        blob, c_s = _timed(lambda: lz.compress(data))
        assert blob == want, "a cluster wrote another file"
        stats = lz.last_stats
        back, d_s = _timed(lambda: lz.decompress(blob))
        assert back == data
        rows.append((f"Ray, {n} worker{'s' * (n > 1)} of one CPU, batch size {args.batch_size}", stats, c_s, d_s))
        lz.workers.stop()
    ray.shutdown()
    one = rows[1]
    lines = ["# lmzip on a local Ray cluster", "", provenance(), "",
             f"The first {len(data)} bytes of alice29, the default model and coding. With N workers the input is cut "
             "into enough chunks for a batch on each (`chunking.chunk_length`), so the work is the same tokens in N "
             "chunks; each cluster's file is compared byte for byte with the one this process writes at N times the "
             "batch size. Actors are started and warmed (one untimed round trip) before the timed one.", "",
             "| where | chunks | file bytes | compress s | decompress s | compress B/s | decompress B/s "
             "| compress vs 1 worker | decompress vs 1 worker |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s, c, d in rows:
        lines.append(f"| {name} | {s.lm_chunks} | {s.output_bytes} | {c:.1f} | {d:.1f} | {len(data) / c:.0f} "
                     f"| {len(data) / d:.0f} | {one[2] / c:.2f}x | {one[3] / d:.2f}x |")
    two = rows[3]
    lines += ["", f"Measured scaling from 1 to 2 one-CPU workers on this {os.cpu_count()}-core machine: "
              f"{one[2] / two[2]:.2f}x compress, {one[3] / two[3]:.2f}x decompress. Projected for a cluster from the "
              f"per-worker figures: N one-CPU workers compress about N x {len(data) / one[2]:.0f} B/s and decompress "
              f"about N x {len(data) / one[3]:.0f} B/s when the input has at least N batches (an input of N x 2048 "
              "tokens or more), scaled by the efficiency measured here; no GPU worker has been measured."]
    write("cluster.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
