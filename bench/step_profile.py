"""Where a step of the encoder's loop spends its time, against the matmul roofline.

    python bench/step_profile.py [--model smollm2-135m] [--batch 48] [--chunk 1024] [--context 512]

Compresses one batch of ``--batch`` prose chunks of ``--chunk`` tokens in a ``--context``
window with ``engine.encode_batch`` (the loop ``lmzip compress`` runs, at the default batch and
context unless told; the chunk is twice the context, so the window moves twice) under
torch's profiler, then once more without it for the wall time. Ops are grouped as the linear
layers' GEMMs, the output head's GEMM, attention's batched matmuls, and the rest; time outside
any torch op is Python and the numba coder. The GEMM groups are also given in GFLOP/s beside the
roofline matmul measured in the same run. Writes benchmarks/step-profile.md.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import CORPUS, provenance, write
from speed import matmul_flops
from torch.profiler import ProfilerActivity, profile

import lmzip
from lmzip import engine
from lmzip.quantize import DEFAULT_PRECISION

GROUPS = {"aten::mm": "linear layers (F.linear GEMM)", "aten::addmm": "linear layers (F.linear GEMM)",
          "mkldnn::_linear_pointwise": "output head (oneDNN GEMM)", "aten::bmm": "attention (batched matmuls)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--batch", type=int, default=lmzip.codec.DEFAULT_BATCH_SIZE)
    ap.add_argument("--context", type=int, default=lmzip.codec.DEFAULT_CONTEXT)
    ap.add_argument("--chunk", type=int, default=2 * lmzip.codec.DEFAULT_CONTEXT)
    args = ap.parse_args()
    lm = lmzip.load(args.model)
    text = (CORPUS / "prose" / "alice29.txt").read_text(encoding="utf-8")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    rows = [ids[i * args.chunk:(i + 1) * args.chunk] for i in range(args.batch)]
    if len(rows[-1]) < args.chunk:
        raise SystemExit(f"alice29 holds fewer than {args.batch} x {args.chunk} tokens")
    roofline = matmul_flops(torch.float32, 2048, lm.device)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        engine.encode_batch(lm, rows, args.context, DEFAULT_PRECISION)
        profiled_s = time.perf_counter() - began
    began = time.perf_counter()
    engine.encode_batch(lm, rows, args.context, DEFAULT_PRECISION)
    wall_s = time.perf_counter() - began

    seconds: dict[str, float] = {}
    rest: dict[str, float] = {}
    for event in prof.key_averages():
        s = event.self_cpu_time_total / 1e6
        if event.key in GROUPS:
            seconds[GROUPS[event.key]] = seconds.get(GROUPS[event.key], 0.0) + s
        else:
            rest[event.key] = s
    seconds["other torch ops"] = sum(rest.values())
    seconds["outside torch ops (Python, numba coder)"] = profiled_s - sum(seconds.values())

    steps, tokens = args.chunk, args.batch * args.chunk
    head = lm.module.lm_head.weight.numel()
    linear = sum(m.weight.numel() for m in lm.module.modules() if isinstance(m, torch.nn.Linear)) - head
    flops = {"linear layers (F.linear GEMM)": 2 * linear * tokens, "output head (oneDNN GEMM)": 2 * head * tokens}
    md = [f"# One batch of the encoder's step loop, profiled ({args.model})", "",
          f"{args.batch} rows x {args.chunk} tokens of prose/alice29.txt through `engine.encode_batch`, context "
          f"{args.context}. Wall time "
          f"{wall_s:.1f} s without the profiler ({tokens / wall_s:.1f} tok/s), {profiled_s:.1f} s with it; the "
          f"shares are of the profiled run. Roofline: F.linear/oneDNN square matmul {roofline / 1e9:.1f} GFLOP/s.",
          "", "| where | ms a step | share | GFLOP/s | of roofline |", "|---|---:|---:|---:|---:|"]
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        rate = flops[name] / s if name in flops and s > 0 else None
        md.append(f"| {name} | {1000 * s / steps:.1f} | {100 * s / profiled_s:.0f}% | "
                  f"{f'{rate / 1e9:.1f}' if rate else '-'} | {f'{100 * rate / roofline:.0f}%' if rate else '-'} |")
    top = sorted(rest.items(), key=lambda kv: -kv[1])[:8]
    md += ["", "Largest of the other torch ops, ms a step: "
           + ", ".join(f"`{k}` {1000 * s / steps:.1f}" for k, s in top) + ".", "", provenance(), ""]
    write("step-profile.md", "\n".join(md))


if __name__ == "__main__":
    main()
