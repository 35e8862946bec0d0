"""The integer engine's newest revision against an older one: bits and time on every corpus file, side by side.

    python bench/revision.py [--against int/2] [--bytes 16000] [--files web/html,...] [--model smollm2-135m]

Each file's first ``--bytes`` bytes are compressed at the defaults by the newest revision
(``predictor.ENGINE``) and by ``--against``, one right after the other in one process, and each
file is decoded again in a fresh codec and compared byte for byte. "model" and "mixed" are the
cross-entropy bits before and after the mixer: "saved" compares the mixed bits, which the
revision's arithmetic decides; the files' bytes include their headers, where an older revision
is named (7 bytes) and the newest is the default (none). Times are wall clock on a shared
machine: compare the revisions' ratio, not the absolute figures.
Writes benchmarks/revision-NEW-OLD.csv and .md (NEW and OLD without the slash).
"""

from __future__ import annotations

import argparse

from common import CORPUS, corpus_files, provenance, side_by_side, write, write_csv

import lmzip
from lmzip import predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="int/2", choices=[r for r in predictor.REVISIONS if r != predictor.ENGINE])
    ap.add_argument("--bytes", type=int, default=16000, help="bytes of each corpus file (0: all of it)")
    ap.add_argument("--files", help="comma-separated corpus paths [default: every corpus file]")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    new = lmzip.LMZip(args.model)
    old = lmzip.LMZip(new.lm, revision=args.against)
    paths = [CORPUS / f for f in args.files.split(",")] if args.files else corpus_files()
    rows = side_by_side({"new": new, "old": old}, paths, args.bytes)
    for r in rows:
        r["saved_pct"] = round(100 * (1 - r["new_mixed_bits"] / r["old_mixed_bits"]), 3)
    name = f"revision-{predictor.ENGINE}-{args.against}".replace("/", "")
    write_csv(f"{name}.csv", rows)
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("file", "area")}
    tot.update(file="**all**", saved_pct=round(100 * (1 - tot["new_mixed_bits"] / tot["old_mixed_bits"]), 3))
    md = [f"# Engine {predictor.ENGINE} against {args.against}, {args.model}", "",
          f"{f'The first {args.bytes} bytes' if args.bytes else 'All'} of each file, compressed at the defaults "
          f"by each revision, one after the other in one process; every file decoded again in a fresh codec and "
          "compared byte for byte. model / mixed = cross-entropy bits before / after the mixer; saved = mixed bits "
          f"saved by {predictor.ENGINE}. File bytes include the header, which names {args.against} (7 bytes) and "
          f"leaves the default {predictor.ENGINE} out. Times are wall clock on a shared machine: the ratio of the "
          "two revisions is the cost.", "",
          f"| file | tokens | {args.against} model bits | {predictor.ENGINE} model bits | {args.against} mixed bits | "
          f"{predictor.ENGINE} mixed bits | saved | {args.against} bytes | {predictor.ENGINE} bytes | "
          f"compress {predictor.ENGINE}/{args.against} | decompress {predictor.ENGINE}/{args.against} |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [tot]:
        md.append(f"| {r['file']} | {r['new_tokens']} | {r['old_model_bits']} | {r['new_model_bits']} | "
                  f"{r['old_mixed_bits']} | {r['new_mixed_bits']} | {r['saved_pct']:+.2f}% | {r['old_bytes']} | "
                  f"{r['new_bytes']} | "
                  f"{r['new_compress_s'] / r['old_compress_s']:.3f} | "
                  f"{r['new_decompress_s'] / r['old_decompress_s']:.3f} |")
    md += ["", provenance()]
    write(f"{name}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
