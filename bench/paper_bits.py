"""The paper's theoretical bits beside the bits lmzip actually wrote, for each corpus file.

    python bench/paper_bits.py [--model smollm2-135m] [--resume] [--areas prose,code]

For each corpus file, ``lmzip.analysis.bpc.measure`` (Huang et al.'s method: windows of 1900 tokens,
stride 512, the file as one document) gives the theoretical cross-entropy; the row of
benchmarks/roundtrip-MODEL.csv (bench/roundtrip.py, run first) gives what lmzip's chunked
coder wrote for the same file. Writes benchmarks/paper-bits-MODEL.csv and .md.

The two differ in context (1388 to 1900 tokens in the paper's later windows; in an lmzip
chunk 0 to 511 over its first 512 tokens, then 256 to 512 in its moving window) and coverage (the paper scores no token after the last whole stride, and not
the first token of the stream), so the table compares bits per character of the tokens each
one scores, and states the coverage.

The paper's method runs transformers' own forward pass, so its figures do not change with
lmzip's engine: ``--resume`` keeps those of an earlier run. The lmzip columns are always read
afresh from the round-trip table.
"""

from __future__ import annotations

import argparse
import csv

from common import COMMIT, CORPUS, OUT, corpus_files, provenance, write, write_csv

import lmzip
from lmzip.analysis import bpc

PAPER = ["file", "area", "characters", "tokens", "paper_scored_tokens", "paper_bits", "paper_bpc", "paper_commit"]
COLUMNS = PAPER + ["lmzip_tokens", "lmzip_ce_bits", "lmzip_payload_bits", "lmzip_payload_bpc", "payload_over_paper_pct"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--areas", default="", help="comma-separated areas to measure (default: all)")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run, measure the rest")
    args = ap.parse_args()
    coded = {r["file"]: r for r in csv.DictReader(open(OUT / f"roundtrip-{args.model}.csv"))}
    target = OUT / f"paper-bits-{args.model}.csv"
    # The rows measured before paper_commit was recorded came from the code of 69c6682.
    rows = ([{**{k: r[k] for k in PAPER[:-1]}, "paper_commit": r.get("paper_commit") or "69c6682"}
             for r in csv.DictReader(open(target))] if args.resume and target.exists() else [])
    lm = lmzip.load(args.model)
    areas = set(filter(None, args.areas.split(",")))
    for path in corpus_files():
        name = path.relative_to(CORPUS).as_posix()
        if name in {r["file"] for r in rows} or (areas and path.parent.name not in areas) or name not in coded:
            continue
        result = bpc.measure(lm, str(path))
        rows.append({
            "file": name, "area": path.parent.name, "characters": result.characters, "tokens": result.tokens,
            "paper_scored_tokens": result.scored_tokens, "paper_bits": round(result.bits),
            "paper_bpc": round(result.bpc, 4), "paper_commit": COMMIT,
        })
        print(rows[-1], flush=True)
        rows.sort(key=lambda r: r["file"])
        report([joined(r, coded[r["file"]]) for r in rows], args.model)  # a long run leaves what it measured
    report([joined(r, coded[r["file"]]) for r in rows], args.model)


def joined(paper: dict, coded: dict) -> dict:
    """A paper-method row beside the same file's row of the round-trip table."""
    payload_bpc = int(coded["payload_bits"]) / int(coded["characters"])
    return {**paper, "lmzip_tokens": coded["tokens"], "lmzip_ce_bits": coded["ce_bits"],
            "lmzip_payload_bits": coded["payload_bits"], "lmzip_payload_bpc": round(payload_bpc, 4),
            "payload_over_paper_pct": round(100 * (int(coded["payload_bits"]) / float(paper["paper_bits"]) - 1), 2)}


def report(rows: list[dict], model: str) -> None:
    write_csv(f"paper-bits-{model}.csv", rows, COLUMNS)
    md = [f"# Theoretical (paper method) against written bits, {model}", "",
          "paper = Huang et al.'s method on the file alone (windows of 1900 tokens, stride 512, `lmzip bpc`); its "
          "BPC divides the bits of the tokens it scores by all the file's characters, as the paper does. lmzip = "
          "the float cross-entropy and the payload bits of the file's round trip (every token scored; chunk lengths in "
          "benchmarks/roundtrip-*.md). The gap is mostly context: an lmzip chunk starts from nothing, and its "
          "window holds 256 to 512 tokens where the paper's hold 1388 to 1900.", "",
          "| file | characters | tokens | paper scored tokens | paper bits | paper BPC | lmzip float CE bits "
          "| lmzip payload bits | lmzip payload BPC | payload over paper |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['file']} | {r['characters']} | {r['tokens']} | {r['paper_scored_tokens']} | {r['paper_bits']} "
                  f"| {float(r['paper_bpc']):.4f} | {r['lmzip_ce_bits']} | {r['lmzip_payload_bits']} | "
                  f"{float(r['lmzip_payload_bpc']):.4f} | +{float(r['payload_over_paper_pct']):.2f}% |")
    commits = ", ".join(sorted({r["paper_commit"] for r in rows}))
    md += ["", f"The paper columns were measured with the code of commit {commits} (`--resume` keeps them: they do "
           "not depend on lmzip's engine); the lmzip columns come from the round-trip table.", "", provenance(), ""]
    write(f"paper-bits-{model}.md", "\n".join(md))


if __name__ == "__main__":
    main()
