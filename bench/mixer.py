"""The online mixer against the model alone: bits and time on every corpus file, side by side in one run.

    python bench/mixer.py [--bytes 8000] [--chunk-tokens N] [--files code/click_core.py,...] [--model smollm2-135m]

Each file's first ``--bytes`` bytes are compressed at the defaults with the mixer
(``mixer.REVISION``), with its previous revision, and with ``--mixer off``, one right after the
other in one process, and each file is decoded again in a fresh codec and compared byte for
byte. Bits are the file's; "model" and "mixed" are the cross-entropy before and after the mixer
(``--stats``). Times are wall clock on a shared machine: compare the modes' ratio, not the
absolute figures.
Writes benchmarks/mixer.csv and .md (mixer-FILE...-chunks-N.* with ``--files`` or ``--chunk-tokens``).
"""

from __future__ import annotations

import argparse
import io

from common import CORPUS, corpus_files, provenance, side_by_side, write, write_csv

import lmzip
from lmzip import mixer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=8000, help="bytes of each corpus file (0: all of it)")
    ap.add_argument("--chunk-tokens", type=int, help="tokens a chunk [default: the codec's choice]")
    ap.add_argument("--files", help="comma-separated corpus paths [default: every corpus file]")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    on = lmzip.LMZip(args.model, chunk_tokens=args.chunk_tokens)
    off = lmzip.LMZip(on.lm, chunk_tokens=args.chunk_tokens, mix=False)
    prev = lmzip.LMZip(on.lm, chunk_tokens=args.chunk_tokens, mix=mixer.REVISIONS[-2])
    paths = [CORPUS / f for f in args.files.split(",")] if args.files else corpus_files()
    rows = []
    for r in side_by_side({"on": on, "prev": prev, "off": off}, paths, args.bytes):
        rows.append({"file": r["file"], "area": r["area"], "input_bytes": r["input_bytes"], "tokens": r["on_tokens"],
                     "off_bytes": r["off_bytes"], "prev_bytes": r["prev_bytes"], "on_bytes": r["on_bytes"],
                     "model_bits": r["on_model_bits"], "prev_mixed_bits": r["prev_mixed_bits"],
                     "mixed_bits": r["on_mixed_bits"], "saved_pct": round(100 * (1 - r["on_bytes"] / r["off_bytes"]), 3),
                     **{f"{m}_{d}_s": r[f"{m}_{d}_s"] for m in ("off", "prev", "on") for d in ("compress", "decompress")}})
    name = "-".join(["mixer", *(p.stem for p in paths if args.files),
                     *([f"chunks-{args.chunk_tokens}"] if args.chunk_tokens else [])])
    write_csv(f"{name}.csv", rows)
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("file", "area")}
    md = [f"# The online mixer ({mixer.REVISION}) against its previous revision and the model alone, {args.model}", "",
          f"{f'The first {args.bytes} bytes' if args.bytes else 'All'} of each file, compressed at the defaults "
          f"({'chunks chosen by the codec' if args.chunk_tokens is None else f'but chunks of {args.chunk_tokens} tokens'}) "
          f"with the mixer ({mixer.REVISION}), with its previous revision ({mixer.REVISIONS[-2]}) and "
          "with `--mixer off`, one after the other in one process; every file decoded again in a fresh codec "
          "and compared byte for byte. saved = bytes against off. model / mixed = cross-entropy bits before / "
          f"after the mixer: compare the revisions by these, as {mixer.REVISIONS[-2]}'s files also spend "
          f"{len(prev.writer(io.BytesIO()).head) - len(on.writer(io.BytesIO()).head)} bytes naming their mixer "
          "in the header, where the newest is the default. Times are wall clock on a shared machine: the ratio "
          "of two modes is the cost.", "",
          f"| file | tokens | off bytes | {mixer.REVISIONS[-2]} bytes | {mixer.REVISION} bytes | saved | model bits | "
          f"{mixer.REVISIONS[-2]} mixed bits | {mixer.REVISION} mixed bits | compress on/off | decompress on/off |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [{**tot, "file": "**all**", "saved_pct": round(100 * (1 - tot["on_bytes"] / tot["off_bytes"]), 3)}]:
        md.append(f"| {r['file']} | {r['tokens']} | {r['off_bytes']} | {r['prev_bytes']} | {r['on_bytes']} | "
                  f"{r['saved_pct']:+.2f}% | {r['model_bits']} | {r['prev_mixed_bits']} | {r['mixed_bits']} | "
                  f"{r['on_compress_s'] / r['off_compress_s']:.3f} | "
                  f"{r['on_decompress_s'] / r['off_decompress_s']:.3f} |")
    md += ["", provenance()]
    write(f"{name}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
