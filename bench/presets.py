"""The default settings beside ``lmzip compress --best``, on the same files in one run.

    python bench/presets.py [--files prose/alice29.txt,math/hott_logic.tex] [--model smollm2-135m]

Each file is compressed at the defaults and at ``codec.BEST`` (what ``--best`` fills in), decoded
again by a fresh codec and compared byte for byte (``roundtrip.measure``). The table gives the
bits each preset spends and the time each takes, and --best's bytes and times against the
default's on the same file. Writes benchmarks/presets.csv and .md.
"""

from __future__ import annotations

import argparse

from common import CORPUS, provenance, write, write_csv
from roundtrip import measure

import lmzip
from lmzip import codec as codecs

PRESETS = {"default": {}, "--best": codecs.BEST}
COLUMNS = ["file", "preset", "context", "chunk_tokens", "batch_size", "tokens", "chunks", "lmz_bytes",
           "bits_per_byte", "ce_bits", "mixed_bits", "compress_s", "decompress_s", "peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default="prose/alice29.txt,math/hott_logic.tex", help="comma-separated corpus paths")
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    args = ap.parse_args()
    lm = lmzip.LMZip(args.model).lm
    rows = []
    for name in args.files.split(","):
        for preset, settings in PRESETS.items():
            codec = lmzip.LMZip(lm, **settings)
            row = measure(codec, CORPUS / name)
            rows.append({"preset": preset, "context": codec.context, "batch_size": codec.batch_size,
                         **{k: row[k] for k in COLUMNS if k in row}})
            print(rows[-1], flush=True)
    write_csv("presets.csv", rows, COLUMNS)
    best = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in codecs.BEST.items())
    md = [f"# The defaults beside --best, {args.model}", "",
          f"`--best` is `{best}` "
          "(lmzip/codec.py, BEST). Each file compressed with both presets in one run, decoded again by a fresh "
          "codec and compared byte for byte. Bits per byte are the whole file's; model bits are the engine's "
          "cross-entropy before the mixer, mixed bits after it. \"vs default\": against the same file's default "
          "row. Times are wall clock on a shared machine, one run each.", "",
          "| file | preset | context | chunk tokens | batch | chunks | .lmz bytes | bits/byte | model bits "
          "| mixed bits | compress s | decompress s | bytes vs default | compress time vs default "
          "| decompress time vs default |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next(b for b in rows if b["file"] == r["file"] and b["preset"] == "default")
        md.append(f"| {r['file']} | {r['preset']} | {r['context']} | {r['chunk_tokens']} | {r['batch_size']} | "
                  f"{r['chunks']} | {r['lmz_bytes']} | {r['bits_per_byte']:.4f} | {r['ce_bits']} | {r['mixed_bits']} | "
                  f"{r['compress_s']} | {r['decompress_s']} | {r['lmz_bytes'] / base['lmz_bytes']:.3f} | "
                  f"{r['compress_s'] / base['compress_s']:.2f} | {r['decompress_s'] / base['decompress_s']:.2f} |")
    md += ["", provenance(), ""]
    write("presets.md", "\n".join(md))


if __name__ == "__main__":
    main()
