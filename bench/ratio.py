"""Bits per byte of lmzip against gzip, bzip2, xz, zstd, brotli and PPMd on every corpus file.

    python bench/ratio.py

The classical compressors run here, each round trip verified. lmzip's rows come from
benchmarks/roundtrip-*.csv, written by bench/roundtrip.py, whose every file was decoded again
and compared (rerun that first after a change to lmzip); each row names the engine (and mixer)
that coded it, and the table's notes the commit of each round-trip run. Writes benchmarks/ratio.csv,
benchmarks/ratio.md, benchmarks/ratio.png and the README's results table.
"""

from __future__ import annotations

import csv
import re

from common import CORPUS, OUT, ROOT, corpus_files, provenance, write, write_csv

from lmzip.analysis import benchmark
from lmzip.models import DTYPES


def lmzip_rows() -> list[dict]:
    """A row for each corpus file of each round-trip table, named by model, dtype, engine and mixer
    (tables written before the integer engine have no engine column: the float engine's)."""
    rows = []
    for path in sorted(OUT.glob("roundtrip-*.csv")):
        label = path.stem.removeprefix("roundtrip-")  # MODEL, or MODEL-DTYPE (bench/roundtrip.py)
        model, dtype = next(((label.removesuffix(f"-{d}"), d) for d in DTYPES if label.endswith(f"-{d}")),
                            (label, "float32"))
        for r in csv.DictReader(open(path)):
            if r["round_trip"] != "ok":
                raise SystemExit(f"{path}: {r['file']} did not round-trip")
            size = b"\0" * int(r["bytes"])  # row() needs only the length
            coded = ", ".join(x for x in (r.get("engine") or "float", r.get("mixer") or "off") if x != "off")
            name = f"{benchmark.lmzip_name(model, dtype)} ({coded})"
            rows.append(benchmark.row(CORPUS / r["file"], name, size, int(r["lmz_bytes"]),
                                      float(r["compress_s"]), float(r["decompress_s"])))
    return rows


def mixer_table() -> list[str]:
    """For each round trip coded with the mixer, each area's bits before and after it, from the same
    run: the model's cross-entropy alone (``ce_bits``), after the mixer (``mixed_bits``), and the
    file (``lmz_bytes``, container included), each over the area's bytes."""
    lines = []
    for path in sorted(OUT.glob("roundtrip-*.csv")):
        rows = [r for r in csv.DictReader(open(path)) if r.get("mixer") not in (None, "", "off")]
        if not rows:
            continue
        for area in [*sorted({r["area"] for r in rows}), "all"]:
            part = [r for r in rows if area in ("all", r["area"])]
            size, model, mixed = (sum(float(r[k]) for r in part) for k in ("bytes", "ce_bits", "mixed_bits"))
            lmz = 8 * sum(int(r["lmz_bytes"]) for r in part)
            lines.append(f"| {path.stem.removeprefix('roundtrip-')} ({part[0]['engine']}, {part[0]['mixer']}) | {area} | "
                         f"{model / size:.4f} | {mixed / size:.4f} | {100 * (1 - mixed / model):+.2f}% | {lmz / size:.4f} |")
    head = ["## The mixer beside the model alone", "",
            "The same round trips: bits per byte of the model's cross-entropy before the mixer (the pure LM, as "
            "`--mixer off` would code it, less the range coder's and container's few bytes), after it, and of the "
            "whole file.", "",
            "| round trip | area | model alone | mixed | saved | file |", "|---|---|---:|---:|---:|---:|"]
    return head + lines if lines else []


def sources() -> list[str]:
    """Each round-trip table and the commit of lmzip that wrote it."""
    out = []
    for path in sorted(OUT.glob("roundtrip-*.md")):
        line = next((x for x in path.read_text().splitlines() if x.startswith("- lmzip: commit ")), "")
        out.append(f"`{path.name}` at {line.removeprefix('- lmzip: commit ').split(',')[0] or 'an unknown commit'}")
    return out


def main() -> None:
    rows = [r for path in corpus_files() for r in benchmark.baseline_rows(path)] + lmzip_rows()
    write_csv("ratio.csv", rows)
    table = benchmark.markdown(rows)
    note = ("Bits per byte of the whole output file (lmzip: header and chunk table included), total bits over "
            "total bytes of each area of `../shared/corpus/`; every round trip verified. lmzip rows, by the "
            "round-trip run each comes from: " + "; ".join(sources()) + ".")
    write("ratio.md", "\n".join(["# Ratio: lmzip against classical compressors", "", note, "", table, "",
                                 *mixer_table(), "", provenance(), ""]))
    benchmark.chart(rows, OUT / "ratio.png", "Bits per byte by compressor and corpus area")
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = (f"<!-- bench:ratio -->\n{note}\n\n{table}\n\n"
             "(`python bench/ratio.py`; details in benchmarks/ratio.md)\n<!-- /bench -->")
    readme.write_text(re.sub(r"<!-- bench:ratio -->.*?<!-- /bench -->", lambda _: block, text, flags=re.DOTALL))


if __name__ == "__main__":
    main()
