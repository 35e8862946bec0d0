"""Throughput against the machine's roofline, and the ratio/speed trade-off behind the defaults.

    python bench/speed.py [--model smollm2-135m] [--device cpu] [--out benchmarks]

1. Roofline: sustained matmul FLOP/s of this machine in fp32, bf16 and int8, and from the
   model's FLOPs a token (its linear layers plus attention at the mean context) the tokens/s
   ceiling. Every throughput below is also given as a fraction of that ceiling.
2. Compute paths: the cross-entropy of a sample coded through lmzip's own step loop
   (512-token chunks) and the step rate at batch 64, in fp32, bf16 and int8 (``--dtype int8``:
   ``models.quantize_int8``): what a faster mode costs in bits.
3. Batch size: real compress and decompress runs (each decoded and compared) of prose cut to
   fill exactly B chunks of ``--batch-chunk`` tokens; tokens/s, bytes/s and peak RSS.
4. Chunk length: the same for each chunk length at a fixed KV-cache size (``--chunk-slots``
   = rows x context, the default's 48 x 512; here the context is the chunk, so no window
   moves), so that longer chunks run fewer rows, as they must within the memory limit; beside
   it the float bits/byte of one sample per corpus area chunked at each length.

Writes speed.csv, speed.md and speed.png into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import threading
import time
from pathlib import Path

import torch
from common import CORPUS, ROOT, provenance, rss, write, write_csv

import lmzip
from lmzip import chunking, engine, models
from lmzip.chunking import Kind
from lmzip.quantize import DEFAULT_PRECISION
from lmzip.transformer import ONEDNN, Stepper, onednn_linear

SAMPLES = ["prose/alice29.txt", "web/html", "code/click_core.py", "math/hott_basics.tex"]


def matmul_flops(dtype: torch.dtype, n: int, device: torch.device, repeats: int = 3) -> float:
    """Best-of-``repeats`` FLOP/s of an n x n x n matmul, over every kernel the model's layers use.

    float: ``F.linear`` (MKL on CPU, cuBLAS on CUDA), and on CPU in float32 also oneDNN, which runs
    the output projection (``lmzip.transformer``). int8: torch's dynamic-quantised linear.
    """
    a = torch.randn(n, n, device=device)
    if dtype == torch.int8:
        layer = models.quantize_int8(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)), within="")
        kernels = [lambda: layer(a)]
    else:
        a, b = a.to(dtype), torch.randn(n, n, device=device, dtype=dtype)
        kernels = [lambda: torch.nn.functional.linear(a, b)]
        if device.type == "cpu" and dtype == torch.float32 and ONEDNN:
            kernels.append(lambda: onednn_linear(a, b))
    best = math.inf
    with torch.inference_mode():
        for run in kernels:
            run()
            for _ in range(repeats):
                _sync(device)
                began = time.perf_counter()
                run()
                _sync(device)
                best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(module: torch.nn.Module, context: float) -> float:
    """2 FLOPs a weight of every linear layer, plus q.k and attention-weighted v over ``context`` keys."""
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    attn = module.model.layers[0].self_attn
    width = attn.q_proj.out_features  # heads x head dim
    return 2 * linear + 4 * len(module.model.layers) * width * context


@torch.inference_mode()
def float_bits(lm, texts: dict[str, bytes], chunk_tokens: int) -> float:
    """Float cross-entropy in bits of the texts, chunked by lmzip's chunker at ``chunk_tokens``."""
    bits = 0.0
    for data in texts.values():
        for c in chunking.split(data, lm.tokenizer, chunk_tokens)[0]:
            if c.kind != Kind.LM:
                bits += 8 * len(c.payload)
                continue
            ids = torch.tensor([[lm.start_token, *c.tokens]], device=lm.device)
            logits = lm.module(input_ids=ids[:, :-1]).logits[0].float()
            bits -= float(torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum()) / math.log(2)
    return bits


def lockstep_bits(lm, texts: dict[str, bytes], chunk_tokens: int) -> float:
    """Float cross-entropy in bits of the texts coded by ``engine.encode_batch``, as a file would be.

    Not teacher-forced: under int8, activations are quantised a step at a time, over the batch's
    rows, exactly as when lmzip compresses; a whole window at once would give other bits.
    """
    rows, bits = [], 0.0
    for data in texts.values():
        for c in chunking.split(data, lm.tokenizer, chunk_tokens)[0]:
            if c.kind == Kind.LM:
                rows.append(c.tokens)
            else:
                bits += 8 * len(c.payload)
    return bits + float(engine.encode_batch(lm, rows, chunk_tokens, DEFAULT_PRECISION).ce_bits.sum())


@torch.inference_mode()
def step_rate(module, lm, rows: int, steps: int) -> float:
    """Tokens/s of the lockstep step loop at ``rows`` rows, over ``steps`` steps from the start."""
    step = Stepper(module, rows, steps)
    x = torch.full((rows,), lm.start_token, device=lm.device)
    step(x)  # warm-up
    step = Stepper(module, rows, steps)
    _sync(lm.device)
    began = time.perf_counter()
    for _ in range(steps):
        step(x)
    _sync(lm.device)
    return rows * steps / (time.perf_counter() - began)


class PeakRSS:
    """The highest resident set size (bytes) seen while the block runs, sampled every 20 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def prose_tokens(lm) -> list[int]:
    text = "".join((CORPUS / "prose" / name).read_text(encoding="utf-8") for name in ("alice29.txt", "asyoulik.txt"))
    return lm.tokenizer.encode(text, add_special_tokens=False)


def coding_run(lm, tokens: list[int], batch: int, chunk: int) -> dict:
    """Compress then decompress text that fills ``batch`` chunks of ``chunk`` tokens; verify; time both."""
    need = int(batch * chunk * 0.97)  # re-tokenising a chunk's text can add a token or two
    data = lm.tokenizer.decode((tokens * (need // len(tokens) + 1))[:need]).encode()
    codec = lmzip.LMZip(lm, batch_size=batch, chunk_tokens=chunk, context=chunk)
    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(lm.device)
    with PeakRSS() as mem_c:
        began = time.perf_counter()
        blob = codec.compress(data)
        compress_s = time.perf_counter() - began
    stats = codec.last_stats
    if stats.lm_chunks > batch:
        print(f"warning: batch {batch} x chunk {chunk}: {stats.lm_chunks} chunks, more than one batch", flush=True)
    with PeakRSS() as mem_d:
        began = time.perf_counter()
        back = codec.decompress(blob)
        decompress_s = time.perf_counter() - began
    if back != data:
        raise SystemExit(f"round trip FAILED at batch {batch}, chunk {chunk}")
    return {
        "batch": batch, "chunk_tokens": chunk, "chunks": stats.lm_chunks, "tokens": stats.tokens,
        "bytes": len(data), "bits_per_byte": round(stats.bits_per_byte, 4),
        "compress_tok_s": round(stats.tokens / compress_s, 1), "decompress_tok_s": round(stats.tokens / decompress_s, 1),
        "compress_B_s": round(len(data) / compress_s), "decompress_B_s": round(len(data) / decompress_s),
        "peak_rss_mb": round(max(mem_c.peak, mem_d.peak) / 2**20),
        "peak_device_mb": round(torch.cuda.max_memory_allocated(lm.device) / 2**20) if lm.device.type == "cuda" else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batches", default="1,8,32,64,128", help="batch sizes of the batch sweep")
    ap.add_argument("--batch-chunk", type=int, default=128, help="chunk tokens in the batch sweep")
    ap.add_argument("--chunks", default="512,1024,2048", help="chunk lengths of the chunk sweep")
    ap.add_argument("--chunk-slots", type=int,
                    default=lmzip.codec.DEFAULT_BATCH_SIZE * lmzip.codec.DEFAULT_CONTEXT,
                    help="rows x chunk tokens in the chunk sweep (its KV-cache size)")
    ap.add_argument("--ratio-chunks", default="128,256,512,1024,2048", help="chunk lengths for bits/byte")
    ap.add_argument("--sample-bytes", type=int, default=8000, help="bytes a corpus area for bits/byte")
    ap.add_argument("--path-bytes", type=int, default=4000, help="bytes a corpus area for the compute paths")
    ap.add_argument("--paths", default="float32,bfloat16,int8")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    args = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]

    lm = lmzip.load(args.model, device=args.device)
    device = lm.device

    # 1. Roofline
    peak = {}
    for name in args.paths.split(","):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}[name]
        if dtype == torch.int8 and device.type == "cuda":
            continue  # torch's dynamic int8 linear is CPU-only
        # bf16 without AVX512-BF16 crawls on a CPU; a GPU needs large products to reach its rate
        n = 8192 if device.type == "cuda" else 512 if dtype == torch.bfloat16 else 2048
        peak[name] = matmul_flops(dtype, n, device)
        print(f"matmul {name}: {peak[name] / 1e9:.1f} GFLOP/s", flush=True)
    own = lm.dtype_name

    def ceiling(context: float) -> float:
        return peak[own] / flops_per_token(lm.module, context)

    # 2. Coding runs, before the compute paths' model copies can swell the RSS. speed.csv is
    #    rewritten after each run, so a run stopped by a time limit leaves what it measured.
    tokens = prose_tokens(lm)
    runs = []
    plan = [("batch", b, args.batch_chunk) for b in ints(args.batches)]
    plan += [("chunk", args.chunk_slots // c, c) for c in ints(args.chunks)]
    for sweep, batch, chunk in plan:
        r = {"sweep": sweep, **coding_run(lm, tokens, batch, chunk)}
        top = ceiling(chunk / 2)
        r["ceiling_tok_s"] = round(top, 1)
        r["compress_of_ceiling"] = round(r["compress_tok_s"] / top, 3)
        r["decompress_of_ceiling"] = round(r["decompress_tok_s"] / top, 3)
        runs.append(r)
        print(r, flush=True)
        write_csv("speed.csv", runs, out=args.out)

    # 3. Compute paths
    texts = {name: (CORPUS / name).read_bytes()[: args.path_bytes] for name in SAMPLES}
    path_rows = []
    for name in peak:
        module = lm.module if name == own else (
            models.quantize_int8(copy.deepcopy(lm.module)) if name == "int8" else copy.deepcopy(lm.module).to(getattr(torch, name)))
        bits = lockstep_bits(dataclasses.replace(lm, module=module, dtype=models.DTYPES[name]), texts, 512)
        rate = step_rate(module, lm, 64, 4 if name == "bfloat16" and device.type == "cpu" else 32)
        path_rows.append({"path": name, "matmul_gflop_s": round(peak[name] / 1e9, 1),
                          "bits_per_byte": round(bits / sum(map(len, texts.values())), 4),
                          "step_tok_s_b64": round(rate, 1)})
        print(path_rows[-1], flush=True)
        del module

    texts = {name: (CORPUS / name).read_bytes()[: args.sample_bytes] for name in SAMPLES}
    ratio = {c: float_bits(lm, texts, c) / sum(map(len, texts.values())) for c in ints(args.ratio_chunks)}
    print("bits/byte by chunk:", ratio, flush=True)

    write_csv("speed-paths.csv", path_rows, out=args.out)
    write_csv("speed-chunks.csv", [{"chunk_tokens": c, "bits_per_byte": round(v, 4),
                                    "vs_best_pct": round(100 * (v / min(ratio.values()) - 1), 2)}
                                   for c, v in ratio.items()], out=args.out)
    plot(runs, ratio, ceiling(args.batch_chunk / 2), args, args.out / "speed.png")
    write("speed.md", markdown(runs, path_rows, ratio, peak, lm, args), out=args.out)


def markdown(runs, path_rows, ratio, peak, lm, args) -> str:
    best, own = min(ratio.values()), lm.dtype_name
    md = [f"# Speed of {args.model} on {lm.device.type}", "",
          "## Roofline", "",
          "Sustained matmul rate (best of 3 square matmuls, over the kernels the model's layers use) and the "
          "tokens/s ceiling it implies: "
          f"{flops_per_token(lm.module, 0) / 1e6:.0f} MFLOP a token in the linear layers, plus attention over the "
          "mean context (half the chunk length).", "",
          "| dtype | matmul GFLOP/s | ceiling tok/s, chunk 128 | ceiling tok/s, chunk 512 |",
          "|---|---:|---:|---:|"]
    for name, flops in peak.items():
        md.append(f"| {name} | {flops / 1e9:.1f} | {flops / flops_per_token(lm.module, 64):.0f} | "
                  f"{flops / flops_per_token(lm.module, 256):.0f} |")
    md += ["", "## Compute paths", "",
           f"Float bits/byte of the first {args.path_bytes} bytes of {', '.join(SAMPLES)}, coded in 512-token "
           "chunks through lmzip's step loop (`engine.encode_batch`, the samples' chunks as one batch), and the "
           "step rate at batch 64, side by side in this run. int8 is lmzip's `--dtype int8`: the transformer "
           "blocks' linear layers in int8 per output channel, activations quantised each step, the output head "
           "in float32. Each path is offered as a `--dtype`, at the cost in bits shown here.", "",
           f"| path | matmul GFLOP/s | bits/byte | bits vs {own} | step tok/s, B=64 | speed vs {own} |",
           "|---|---:|---:|---:|---:|---:|"]
    base = next(r for r in path_rows if r["path"] == own)
    for r in path_rows:
        md.append(f"| {r['path']} | {r['matmul_gflop_s']} | {r['bits_per_byte']:.4f} | "
                  f"{100 * (r['bits_per_byte'] / base['bits_per_byte'] - 1):+.2f}% | {r['step_tok_s_b64']} | "
                  f"{r['step_tok_s_b64'] / base['step_tok_s_b64']:.2f}x |")
    for sweep, title in (("batch", f"## Batch size (chunk {args.batch_chunk} tokens)"),
                         ("chunk", f"## Chunk length (rows x chunk = {args.chunk_slots} KV slots)")):
        md += ["", title, "",
               "Real compress and decompress runs, each decoded and compared; ceiling = the roofline at this "
               "chunk's mean context.", "",
               "| batch | chunk | tokens | file bits/byte | compress tok/s | decompress tok/s | compress B/s "
               "| decompress B/s | of ceiling (c/d) | peak RSS MB | peak GPU MB |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in runs if r["sweep"] == sweep):
            md.append(f"| {r['batch']} | {r['chunk_tokens']} | {r['tokens']} | {r['bits_per_byte']} | {r['compress_tok_s']} | "
                      f"{r['decompress_tok_s']} | {r['compress_B_s']} | {r['decompress_B_s']} | "
                      f"{100 * r['compress_of_ceiling']:.0f}% / {100 * r['decompress_of_ceiling']:.0f}% | "
                      f"{r['peak_rss_mb']} | {r['peak_device_mb'] or '-'} |")
    md += ["", "## Ratio against chunk length", "",
           f"Float bits/byte of the first {args.sample_bytes} bytes of each of {', '.join(SAMPLES)}, chunked by "
           "lmzip's chunker (the quantised payload tracks it to within 0.01%).", "",
           "| chunk tokens | bits/byte | vs best |", "|---:|---:|---:|"]
    md += [f"| {c} | {v:.4f} | +{100 * (v / best - 1):.2f}% |" for c, v in ratio.items()]
    md += ["", "![speed](speed.png)", "", provenance(), ""]
    return "\n".join(md)


def plot(runs, ratio, ceiling_tok_s, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    batch = [r for r in runs if r["sweep"] == "batch"]
    xs = [r["batch"] for r in batch]
    left.plot(xs, [r["compress_tok_s"] for r in batch], "o-", label="compress")
    left.plot(xs, [r["decompress_tok_s"] for r in batch], "s-", label="decompress")
    left.axhline(ceiling_tok_s, color="k", ls="--", label=f"roofline ({ceiling_tok_s:.0f} tok/s)")
    left.set(xscale="log", xlabel="batch size (chunks coded in lockstep)", ylabel="tokens/s",
             title=f"throughput, chunk {args.batch_chunk} tokens")
    left.set_xticks(xs, [str(x) for x in xs])
    left.minorticks_off()
    left.legend()
    cs = list(ratio)
    right.plot(cs, [ratio[c] for c in cs], "o-", color="C2")
    right.set(xscale="log", xlabel="chunk tokens", ylabel="float bits/byte", title="ratio against chunk length")
    right.set_xticks(cs, [str(c) for c in cs])
    right.minorticks_off()
    chunk = [r for r in runs if r["sweep"] == "chunk"]
    if chunk:
        twin = right.twinx()
        twin.plot([r["chunk_tokens"] for r in chunk], [r["compress_tok_s"] for r in chunk], "^--", color="C3")
        twin.set_ylabel(f"compress tokens/s, rows x chunk = {args.chunk_slots}", color="C3")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
