"""What a chunk's cold start costs: the model's loss against how much context a token has.

    python bench/context_curve.py [--model smollm2-135m] [--window 2048] [--per-area 8]

From each corpus area, ``--per-area`` windows of ``--window`` tokens (spread evenly over the
area's files) are scored teacher-forced from the start token, in float32. The mean bits a token
at each position, against the mean deep in the window (positions 512 and on), give the excess
a chunk pays for starting with no context. That excess, with the chunk table's bytes, is what
lmzip's minimum chunk length (``chunking.MIN_CHUNK_TOKENS``) and its 512-token context window
(``codec.DEFAULT_CONTEXT``, which keeps at least 256 tokens) are chosen from. Writes
benchmarks/context-curve.csv and .md.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from common import CORPUS, provenance, write, write_csv

import lmzip

BUCKETS = [(0, 64), (64, 128), (128, 256), (256, 384), (384, 512), (512, 1024), (1024, 2048)]
DEEP = 512  # positions from here on count as "deep in the text"


def windows(lm, area: str, count: int, length: int) -> list[list[int]]:
    """``count`` windows of ``length`` tokens, spread evenly over the area's files."""
    ids = [lm.tokenizer.encode(p.read_text(encoding="utf-8"), add_special_tokens=False)
           for p in sorted((CORPUS / area).glob("*"))]
    spans = [(f, s) for f, t in enumerate(ids) for s in range(0, len(t) - length, length)]
    picks = np.linspace(0, len(spans) - 1, count).round().astype(int)
    return [ids[spans[i][0]][spans[i][1] : spans[i][1] + length] for i in picks]


@torch.inference_mode()
def position_bits(lm, rows: list[list[int]]) -> np.ndarray:
    """Mean bits of each position over the rows, each scored from the start token."""
    out = []
    for r in rows:
        x = torch.tensor([[lm.start_token, *r]], device=lm.device)
        logits = lm.module(input_ids=x[:, :-1]).logits[0].float()
        out.append((-torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0] / math.log(2)).cpu().numpy())
    return np.mean(out, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--per-area", type=int, default=8)
    args = ap.parse_args()
    lm = lmzip.load(args.model)
    areas = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    rows = []
    for area in areas:
        bits = position_bits(lm, windows(lm, area, args.per_area, args.window))
        deep = float(bits[DEEP:].mean())
        row = {"area": area, "windows": args.per_area, "deep_bits_per_token": round(deep, 3)}
        for a, b in BUCKETS:
            row[f"bits_{a}_{b}"] = round(float(bits[a:b].mean()), 3)
        for n in (256, 512):
            row[f"excess_bits_first_{n}"] = round(float((bits[:n] - deep).sum()))
        rows.append(row)
        print(row, flush=True)
    write_csv("context-curve.csv", rows)
    md = [f"# Loss against context, {args.model}", "",
          f"Mean bits a token at each position of {args.per_area} windows of {args.window} tokens an area, "
          "scored teacher-forced from the start token (float32). deep = the mean from position "
          f"{DEEP} on; excess = the bits the first positions cost above deep: what each chunk pays for "
          "starting with no context.", "",
          "| area | " + " | ".join(f"{a}-{b}" for a, b in BUCKETS) + " | deep | excess, first 256 | excess, first 512 |",
          "|---|" + "---:|" * (len(BUCKETS) + 3)]
    for r in rows:
        md.append(f"| {r['area']} | " + " | ".join(f"{r[f'bits_{a}_{b}']:.3f}" for a, b in BUCKETS)
                  + f" | {r['deep_bits_per_token']:.3f} | {r['excess_bits_first_256']} | {r['excess_bits_first_512']} |")
    md += ["", provenance(), ""]
    write("context-curve.md", "\n".join(md))


if __name__ == "__main__":
    main()
