"""Round-trip every corpus file with a model; report achieved bits beside the ideal and float bits.

    python bench/roundtrip.py [--model smollm2-135m] [--device cpu] [--batch-size 48] [--out benchmarks]

Writes roundtrip-MODEL.csv and roundtrip-MODEL.md into ``--out``. (Tables named MODEL-DTYPE are
the float engine's, which ran the model in that dtype.) Every row is a real .lmz file that
was decoded again, in a fresh codec, and compared byte for byte with its input.
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
from pathlib import Path

from common import CORPUS, OUT, corpus_files, provenance, write, write_csv

import lmzip

COLUMNS = ["file", "area", "engine", "mixer", "bytes", "characters", "tokens", "chunks", "chunk_tokens", "lmz_bytes",
           "bits_per_byte", "bits_per_char", "ce_bits", "mixed_bits", "ideal_bits", "payload_bits", "payload_over_ideal_pct",
           "container_bytes", "compress_s", "decompress_s", "compress_B_s", "decompress_B_s", "peak_rss_mb",
           "round_trip"]


def measure(codec: lmzip.LMZip, path, max_bytes: int | None = None) -> dict:
    data = path.read_bytes()[:max_bytes]
    began = time.perf_counter()
    blob = codec.compress(data)
    compress_s = time.perf_counter() - began
    s = codec.last_stats
    began = time.perf_counter()
    back = lmzip.LMZip(codec.lm).decompress(blob)
    decompress_s = time.perf_counter() - began
    if back != data:
        raise SystemExit(f"round trip FAILED for {path}")
    lmz = lmzip.container.parse(blob)
    return {
        "file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name,
        "engine": lmz.header["coding"]["engine"], "mixer": lmz.header["coding"].get("mixer", "off"), "bytes": len(data),
        "characters": s.characters, "tokens": s.tokens, "chunks": s.lm_chunks + s.fallback_chunks,
        "chunk_tokens": max((e.tokens for e in lmz.entries), default=0),
        "lmz_bytes": len(blob), "bits_per_byte": round(s.bits_per_byte, 4), "bits_per_char": round(s.bits_per_char, 4),
        "ce_bits": round(s.ce_bits), "mixed_bits": round(s.mixed_bits), "ideal_bits": round(s.ideal_bits),
        "payload_bits": s.payload_bits,
        "payload_over_ideal_pct": round(100 * (s.payload_bits / s.ideal_bits - 1), 4),
        "container_bytes": s.container_bytes, "compress_s": round(compress_s, 1),
        "decompress_s": round(decompress_s, 1), "compress_B_s": round(len(data) / compress_s),
        "decompress_B_s": round(len(data) / decompress_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "round_trip": "ok",
    }


def report(rows: list[dict], label: str, codec: lmzip.LMZip, out=OUT) -> None:
    write_csv(f"roundtrip-{label}.csv", rows, COLUMNS, out)
    md = [f"# Round trips of the corpus with {label}", "",
          f"Defaults: batch {codec.batch_size}, context {codec.context} tokens, chunk length "
          f"{codec.chunk_tokens or 'chosen for each file (chunk tokens)'}, precision {codec.precision} bits, "
          f"engine {rows[-1]['engine']}, mixer {rows[-1]['mixer']}, "
          f"device {codec.lm.device.type}. Each file was compressed, decoded again in a fresh "
          "codec and compared byte for byte.", "",
          "model CE = the engine's cross-entropy under lmzip's chunking, before the mixer; mixed = after it; "
          "ideal = sum of -log2(freq/2^precision) under the quantised tables; payload = bits the range coder wrote; container = "
          "header and chunk table. peak RSS is the process's high-water mark so far (model loaded once).", "",
          "| file | bytes | tokens | chunks | chunk tokens | .lmz bytes | bits/byte | bits/char | model CE bits | mixed bits | ideal bits "
          "| payload bits "
          "| payload over ideal | container bytes | compress s | decompress s | compress B/s | decompress B/s "
          "| peak RSS MB | round trip |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['file']} | {r['bytes']} | {r['tokens']} | {r['chunks']} | {r.get('chunk_tokens', '')} | "
                  f"{r['lmz_bytes']} | {float(r['bits_per_byte']):.4f} | "
                  f"{float(r['bits_per_char']):.4f} | {r['ce_bits']} | {r.get('mixed_bits', '')} | {r['ideal_bits']} | {r['payload_bits']} | "
                  f"{float(r['payload_over_ideal_pct']):.4f}% | {r['container_bytes']} | {r['compress_s']} | "
                  f"{r['decompress_s']} | {r['compress_B_s']} | {r['decompress_B_s']} | {r['peak_rss_mb']} | "
                  f"{r['round_trip']} |")
    md += ["", provenance(), ""]
    write(f"roundtrip-{label}.md", "\n".join(md), out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run, measure the rest")
    ap.add_argument("--first", default="", help="comma-separated areas to measure before the others")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=lmzip.codec.DEFAULT_BATCH_SIZE)
    ap.add_argument("--max-bytes", type=int, default=None, help="code only each file's first bytes (a dry run)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    codec = lmzip.LMZip(args.model, device=args.device, batch_size=args.batch_size)
    label = args.model
    done = args.out / f"roundtrip-{label}.csv"
    rows = list(csv.DictReader(open(done))) if args.resume and done.exists() else []
    first = args.first.split(",")
    todo = [p for p in corpus_files() if p.relative_to(CORPUS).as_posix() not in {r["file"] for r in rows}]
    for path in sorted(todo, key=lambda p: first.index(p.parent.name) if p.parent.name in first else len(first)):
        rows.append(measure(codec, path, args.max_bytes))
        print(rows[-1], flush=True)
        order = {p.relative_to(CORPUS).as_posix(): i for i, p in enumerate(corpus_files())}
        rows.sort(key=lambda r: order[r["file"]])
        report(rows, label, codec, args.out)  # after every file, so a long run leaves what it measured


if __name__ == "__main__":
    main()
