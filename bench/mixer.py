"""The online mixer against the model alone: bits and time on every corpus file, side by side in one run.

    python bench/mixer.py [--bytes 8000] [--chunk-tokens N] [--files code/click_core.py,...] [--model smollm2-135m]

Each file's first ``--bytes`` bytes are compressed at the defaults with the mixer
(``mixer.REVISION``) and with ``--mixer off``, one right after the other in one process, and each
file is decoded again in a fresh codec and compared byte for byte. Bits are the file's; "model"
and "mixed" are the cross-entropy before and after the mixer (``--stats``). Times are wall clock
on a shared machine: compare the two modes' ratio, not the absolute figures.
Writes benchmarks/mixer.csv and .md (mixer-FILE...-chunks-N.* with ``--files`` or ``--chunk-tokens``).
"""

from __future__ import annotations

import argparse
import time

from common import CORPUS, corpus_files, provenance, write, write_csv

import lmzip
from lmzip import mixer


def run(codec: lmzip.LMZip, data: bytes) -> dict:
    began = time.perf_counter()
    blob = codec.compress(data)
    compress_s = time.perf_counter() - began
    s = codec.last_stats
    began = time.perf_counter()
    back = lmzip.LMZip(codec.lm).decompress(blob)
    decompress_s = time.perf_counter() - began
    if back != data:
        raise SystemExit("round trip FAILED")
    return {"bytes": len(blob), "model_bits": round(s.ce_bits), "mixed_bits": round(s.mixed_bits),
            "tokens": s.tokens, "compress_s": compress_s, "decompress_s": decompress_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8000, help="bytes of each corpus file (0: all of it)")
    ap.add_argument("--chunk-tokens", type=int, help="tokens a chunk [default: the codec's choice]")
    ap.add_argument("--files", help="comma-separated corpus paths [default: every corpus file]")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    on = lmzip.LMZip(args.model, chunk_tokens=args.chunk_tokens)
    off = lmzip.LMZip(on.lm, chunk_tokens=args.chunk_tokens, mix=False)
    paths = [CORPUS / f for f in args.files.split(",")] if args.files else corpus_files()
    for codec in (on, off):  # load the model and compile every kernel before anything is timed
        run(codec, paths[0].read_bytes()[:400])
    rows = []
    for path in paths:
        data = path.read_bytes()[: args.bytes or None]
        a, b = run(on, data), run(off, data)
        rows.append({"file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name, "input_bytes": len(data),
                     "tokens": a["tokens"], "off_bytes": b["bytes"], "on_bytes": a["bytes"],
                     "model_bits": a["model_bits"], "mixed_bits": a["mixed_bits"],
                     "saved_pct": round(100 * (1 - a["bytes"] / b["bytes"]), 3),
                     "off_compress_s": round(b["compress_s"], 2), "on_compress_s": round(a["compress_s"], 2),
                     "off_decompress_s": round(b["decompress_s"], 2), "on_decompress_s": round(a["decompress_s"], 2)})
        print(rows[-1], flush=True)
    name = "-".join(["mixer", *(p.stem for p in paths if args.files),
                     *([f"chunks-{args.chunk_tokens}"] if args.chunk_tokens else [])])
    write_csv(f"{name}.csv", rows)
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("file", "area")}
    md = [f"# The online mixer ({mixer.REVISION}) against the model alone, {args.model}", "",
          f"{f'The first {args.bytes} bytes' if args.bytes else 'All'} of each file, compressed at the defaults "
          f"({'chunks chosen by the codec' if args.chunk_tokens is None else f'but chunks of {args.chunk_tokens} tokens'}) "
          "with the mixer and "
          "with `--mixer off`, one after the other in one process; every file decoded again in a fresh codec "
          "and compared byte for byte. model / mixed = cross-entropy bits before / after the mixer. Times are "
          "wall clock on a shared machine: the ratio of the two modes is the cost.", "",
          "| file | tokens | off bytes | on bytes | saved | model bits | mixed bits | compress on/off | decompress on/off |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [{**tot, "file": "**all**", "saved_pct": round(100 * (1 - tot["on_bytes"] / tot["off_bytes"]), 3)}]:
        md.append(f"| {r['file']} | {r['tokens']} | {r['off_bytes']} | {r['on_bytes']} | {r['saved_pct']:+.2f}% | "
                  f"{r['model_bits']} | {r['mixed_bits']} | {r['on_compress_s'] / r['off_compress_s']:.3f} | "
                  f"{r['on_decompress_s'] / r['off_decompress_s']:.3f} |")
    md += ["", provenance()]
    print("wrote", write(f"{name}.md", "\n".join(md) + "\n"))


if __name__ == "__main__":
    main()
