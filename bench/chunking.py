"""The trade-off behind the default chunk length: ratio against speed.

    python bench/chunking.py [--model smollm2-135m] [--sample-bytes 24000]

Ratio: the float cross-entropy (teacher-forced, which the quantised ideal tracks to within
0.01%) of the first ``--sample-bytes`` of one file per corpus area, split by lmzip's own
chunker at each chunk length. Speed: the incremental step time of the real engine at each
context length and batch size, from which the tokens/s of coding a whole chunk follows.
Writes benchmarks/chunking.csv and benchmarks/chunking.md.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import transformers

import lmzip
from common import CORPUS, provenance, write, write_csv
from lmzip import chunking
from lmzip.chunking import Kind

SAMPLES = ["prose/alice29.txt", "web/html", "code/click_core.py", "math/hott_basics.tex"]
CHUNKS = [128, 256, 512, 1024, 2048]
BATCHES = [16, 64]


@torch.inference_mode()
def chunk_bits(lm, tokens: list[int]) -> float:
    ids = torch.tensor([[lm.start_token] + tokens], device=lm.device)
    logits = lm.module(input_ids=ids[:, :-1]).logits[0].float()
    return float(-torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum()) / math.log(2)


@torch.inference_mode()
def step_seconds(lm, batch: int, contexts: list[int], repeats: int = 3) -> dict[int, float]:
    """Median time of one incremental step for ``batch`` rows at each context length (ascending)."""
    cache = transformers.DynamicCache()
    out = {}
    for context in contexts:
        missing = context - cache.get_seq_length()
        if missing > 0:  # grow the cache to the context with one batched pass
            lm.module(input_ids=torch.ones((batch, missing), dtype=torch.long), cache=cache, use_cache=True,
                      logits_to_keep=1)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            lm.module(input_ids=torch.ones((batch, 1), dtype=torch.long), cache=cache, use_cache=True)
            times.append(time.perf_counter() - began)
        out[context] = sorted(times)[repeats // 2]
        cache.crop(-repeats)  # back to the context, for the next one
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--sample-bytes", type=int, default=12000)
    args = ap.parse_args()
    lm = lmzip.load(args.model, device="cpu")
    texts = {name: (CORPUS / name).read_bytes()[: args.sample_bytes] for name in SAMPLES}
    total_bytes = sum(len(t) for t in texts.values())
    ratio = {}
    for size in CHUNKS:
        bits = 0.0
        for data in texts.values():
            for c in chunking.split(data, lm.tokenizer, size):
                bits += chunk_bits(lm, c.tokens) if c.kind == Kind.LM else 8 * len(c.payload)
        ratio[size] = bits / total_bytes
        print(f"chunk {size}: {ratio[size]:.4f} bits/byte", flush=True)
    # Step time at the middle of a chunk stands for the chunk's mean (attention cost is linear in context).
    speed = {}
    for b in BATCHES:
        for context, sec in step_seconds(lm, b, [size // 2 for size in CHUNKS]).items():
            speed[(b, 2 * context)] = sec
    for (b, size), sec in speed.items():
        print(f"batch {b} context {size // 2}: {1000 * sec:.1f} ms/step, {b / sec:.0f} tokens/s", flush=True)
    tokens_per_byte = sum(len(lm.tokenizer.encode(t.decode(), add_special_tokens=False))
                          for t in texts.values()) / total_bytes
    rows = []
    for size in CHUNKS:
        row = {"chunk_tokens": size, "bits_per_byte": round(ratio[size], 4),
               "vs_best_pct": round(100 * (ratio[size] / min(ratio.values()) - 1), 2)}
        for b in BATCHES:
            row[f"tok_s_b{b}"] = round(b / speed[(b, size)], 1)
        # A 150 KB file: how many rows it fills, and the throughput at that (capped) batch.
        rows_150k = math.ceil(150_000 * tokens_per_byte / size)
        fill = max(x for x in BATCHES if x <= max(rows_150k, BATCHES[0]))
        row["rows_for_150KB"] = rows_150k
        row["tok_s_150KB"] = round(fill / speed[(fill, size)], 1)
        rows.append(row)
    write_csv("chunking.csv", rows)
    md = ["# Chunk length: ratio against speed", "",
          f"Ratio: float cross-entropy on the first {args.sample_bytes} bytes of {', '.join(SAMPLES)} "
          f"({total_bytes} bytes), split by lmzip's chunker. Speed: {args.model} incremental steps with a "
          "DynamicCache at the middle of a chunk. 'tokens/s for a 150 KB file' uses the largest measured batch "
          "that the file's chunks fill.", "",
          "| chunk tokens | bits/byte | vs best | " + " | ".join(f"tok/s B={b}" for b in BATCHES)
          + " | rows for 150 KB | tok/s for 150 KB |",
          "|---:|---:|---:|" + "---:|" * len(BATCHES) + "---:|---:|"]
    for r in rows:
        md.append(f"| {r['chunk_tokens']} | {r['bits_per_byte']:.4f} | +{r['vs_best_pct']:.2f}% | "
                  + " | ".join(str(r[f'tok_s_b{b}']) for b in BATCHES)
                  + f" | {r['rows_for_150KB']} | {r['tok_s_150KB']} |")
    md += ["", provenance(), ""]
    write("chunking.md", "\n".join(md))


if __name__ == "__main__":
    main()
