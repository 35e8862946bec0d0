"""Every bundled model on the same sample of the corpus: bits per byte and a verified round trip.

    python bench/models.py [--sample-bytes 600] [--models smollm2-135m,gemma3-270m]

The full corpus round trip (bench/roundtrip.py) takes the default model about an hour on a
2-core CPU and Gemma 3 270M several times longer, so the models are compared here on one
sample per corpus area: the first ``--sample-bytes`` of each of the area's files, joined. Each
sample is compressed with the default settings, decoded by a fresh codec and compared. Writes
benchmarks/models.csv and benchmarks/models.md.
"""

from __future__ import annotations

import argparse
import time

from common import corpus_files, provenance, write, write_csv

import lmzip
from lmzip import models


def samples(size: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in corpus_files():
        out[path.parent.name] = out.get(path.parent.name, b"") + path.read_bytes()[:size]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-bytes", type=int, default=600)
    ap.add_argument("--models", default=",".join(models.REGISTRY))
    args = ap.parse_args()
    data = samples(args.sample_bytes)
    rows = []
    for name in args.models.split(","):
        codec = lmzip.LMZip(name)
        for area, text in data.items():
            began = time.perf_counter()
            blob = codec.compress(text)
            compress_s = time.perf_counter() - began
            began = time.perf_counter()
            ok = lmzip.LMZip(codec.lm).decompress(blob) == text
            decompress_s = time.perf_counter() - began
            if not ok:
                raise SystemExit(f"round trip FAILED: {name} on {area}")
            s = codec.last_stats
            rows.append({"model": name, "area": area, "bytes": len(text), "tokens": s.tokens, "lmz_bytes": len(blob),
                         "bits_per_byte": round(s.bits_per_byte, 4), "ce_bits_per_byte": round(s.ce_bits / len(text), 4),
                         "compress_s": round(compress_s, 1), "decompress_s": round(decompress_s, 1),
                         "round_trip": "ok"})
            print(rows[-1], flush=True)
        del codec
    write_csv("models.csv", rows)
    areas = list(data)
    md = ["# Bundled models on one sample per area", "",
          f"The first {args.sample_bytes} bytes of every corpus file, joined per area; default settings; bits per "
          "byte of the whole .lmz file (header and table included, which weighs on samples this small); every "
          "round trip decoded by a fresh codec and compared.", "",
          "| model | " + " | ".join(f"{a} ({len(data[a])} B)" for a in areas) + " | tokens/s compress |",
          "|---|" + "---:|" * (len(areas) + 1)]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = {r["area"]: r for r in rows if r["model"] == name}
        rate = sum(r["tokens"] for r in mine.values()) / sum(r["compress_s"] for r in mine.values())
        md.append(f"| {name} | " + " | ".join(f"{mine[a]['bits_per_byte']:.3f}" for a in areas) + f" | {rate:.0f} |")
    md += ["", provenance(), ""]
    write("models.md", "\n".join(md))


if __name__ == "__main__":
    main()
