"""The paper's theoretical bits beside the bits lmzip actually wrote, for each corpus file.

    python bench/paper_bits.py [--model smollm2-135m] [--resume] [--areas prose,code]

For each corpus file, ``lmzip.bpc.measure`` (Huang et al.'s method: windows of 1900 tokens,
stride 512, the file as one document) gives the theoretical cross-entropy; the row of
benchmarks/roundtrip-MODEL.csv (bench/roundtrip.py, run first) gives what lmzip's chunked
coder wrote for the same file. Writes benchmarks/paper-bits-MODEL.csv and .md.

The two differ in context (1388 to 1900 tokens in the paper's later windows, 0 to 511 within
an lmzip chunk) and coverage (the paper scores no token after the last whole stride, and not
the first token of the stream), so the table compares bits per character of the tokens each
one scores, and states the coverage.
"""

from __future__ import annotations

import argparse
import csv

from common import CORPUS, OUT, corpus_files, provenance, write, write_csv

import lmzip
from lmzip import bpc

COLUMNS = ["file", "area", "characters", "tokens", "paper_scored_tokens", "paper_bits", "paper_bpc",
           "lmzip_tokens", "lmzip_ce_bits", "lmzip_payload_bits", "lmzip_payload_bpc", "payload_over_paper_pct"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--areas", default="", help="comma-separated areas to measure (default: all)")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run, measure the rest")
    args = ap.parse_args()
    coded = {r["file"]: r for r in csv.DictReader(open(OUT / f"roundtrip-{args.model}.csv"))}
    target = OUT / f"paper-bits-{args.model}.csv"
    rows = list(csv.DictReader(open(target))) if args.resume and target.exists() else []
    lm = lmzip.load(args.model)
    areas = set(filter(None, args.areas.split(",")))
    for path in corpus_files():
        name = path.relative_to(CORPUS).as_posix()
        if name in {r["file"] for r in rows} or (areas and path.parent.name not in areas) or name not in coded:
            continue
        result = bpc.measure(lm, str(path))
        c = coded[name]
        payload_bpc = int(c["payload_bits"]) / int(c["characters"])
        rows.append({
            "file": name, "area": path.parent.name, "characters": result.characters, "tokens": result.tokens,
            "paper_scored_tokens": result.scored_tokens, "paper_bits": round(result.bits),
            "paper_bpc": round(result.bpc, 4), "lmzip_tokens": c["tokens"], "lmzip_ce_bits": c["ce_bits"],
            "lmzip_payload_bits": c["payload_bits"], "lmzip_payload_bpc": round(payload_bpc, 4),
            "payload_over_paper_pct": round(100 * (payload_bpc / result.bpc - 1), 2),
        })
        print(rows[-1], flush=True)
        rows.sort(key=lambda r: r["file"])
        report(rows, args.model)


def report(rows: list[dict], model: str) -> None:
    write_csv(f"paper-bits-{model}.csv", rows, COLUMNS)
    md = [f"# Theoretical (paper method) against written bits, {model}", "",
          "paper = Huang et al.'s method on the file alone (windows of 1900 tokens, stride 512, `lmzip bpc`); its "
          "BPC divides the bits of the tokens it scores by all the file's characters, as the paper does. lmzip = "
          "the float cross-entropy and the payload bits of the file's round trip (chunks of 512 tokens, every token "
          "scored; benchmarks/roundtrip-*.md). The gap is mostly context: an lmzip chunk starts from nothing.", "",
          "| file | characters | tokens | paper scored tokens | paper bits | paper BPC | lmzip float CE bits "
          "| lmzip payload bits | lmzip payload BPC | payload over paper |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['file']} | {r['characters']} | {r['tokens']} | {r['paper_scored_tokens']} | {r['paper_bits']} "
                  f"| {float(r['paper_bpc']):.4f} | {r['lmzip_ce_bits']} | {r['lmzip_payload_bits']} | "
                  f"{float(r['lmzip_payload_bpc']):.4f} | +{float(r['payload_over_paper_pct']):.2f}% |")
    md += ["", provenance(), ""]
    write(f"paper-bits-{model}.md", "\n".join(md))


if __name__ == "__main__":
    main()
