"""The integer engine on a GPU: throughput against batch size, peak memory, and files that cross devices.

    python bench/gpu.py --out DIR [--device cuda] [--bytes 50000000] [--batches 48,256,1024]

On a corpus-derived input (the corpus files joined in order and repeated to ``--bytes``), for
each batch size: compress the input, then decompress a file of its first ``--decode-bytes`` and
compare it byte for byte, with the peak device memory of each. Each is timed first on a probe,
and then on as much of its input as ``--seconds`` allow at the probe's rate, so a slow device
still fits the lent machine's minutes (the tables say how many bytes each run took). Every
batch size also compresses the first ``--cross-bytes``, whose bits are set beside this process's
CPU defaults (the ratio cost of the batch size). Then the cross-device round trips: that sample
compressed on the device and on the CPU must be the same bytes, and each decodes on the other.
Throughput is also given as a fraction of the device's int8 GEMM rate, measured here with
``torch._int_mm``, counting two operations a weight a token (the halves that the engine's GEMMs
multiply are not counted). Writes DIR/gpu-cross.csv first, DIR/gpu.csv after each batch size, and DIR/gpu.md. ``bench/gpu_check.sh`` runs it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import corpus_files, int8_rate, multiplied_weights, provenance, sync, write, write_csv

import lmzip


def corpus_input(size: int) -> bytes:
    """The corpus files joined in order, repeated and cut to ``size`` bytes."""
    joined = b"".join(p.read_bytes() for p in corpus_files())
    return (joined * (size // len(joined) + 1))[:size]


def _peak(device: torch.device) -> float:
    """Peak device memory since the last reset, in MB (0 on a CPU)."""
    return torch.cuda.max_memory_allocated() / 1e6 if device.type == "cuda" else 0.0


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _timed(device: torch.device, fn):
    sync(device)
    began = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - began


def _fitted(run, cap: int, probe: int, seconds: float):
    """``run(b) -> (result, seconds)`` on the first ``probe`` bytes, then again on as many as
    ``seconds`` allow at the rate measured (at most ``cap``): the last result, and its ``b``."""
    b = min(probe, cap)
    out, took = run(b)
    grown = min(cap, int(b / took * seconds))
    if grown > b:
        b = grown
        out, took = run(b)
    return (out, took), b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bytes", type=int, default=50_000_000)
    ap.add_argument("--decode-bytes", type=int, default=4_000_000)
    ap.add_argument("--cross-bytes", type=int, default=100_000)
    ap.add_argument("--batches", default="48,256,1024")
    ap.add_argument("--probe-bytes", type=int, default=1_000_000,
                    help="compress this much first (a tenth of it to decompress), then as much as --seconds allow")
    ap.add_argument("--seconds", type=float, default=60, help="the time aimed at for each timed run")
    ap.add_argument("--gemm", type=int, default=8192, help="the side of the int8 GEMM that gives the roofline")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = corpus_input(args.bytes)
    sample = data[: args.cross_bytes]
    cpu = lmzip.LMZip(device="cpu")
    want = cpu.compress(sample)  # the CPU defaults' file of the sample
    assert cpu.decompress(want) == sample
    here = lmzip.LMZip(cpu.lm.name, device=args.device)
    weights = multiplied_weights(here.lm.predictor().model)
    made_here = here.compress(sample)
    cross = {"the device's file of the sample is the CPU's, byte for byte": made_here == want,
             "the device's file decodes on the CPU": cpu.decompress(made_here) == sample,
             "the CPU's file decodes on the device": here.decompress(want) == sample}
    print(cross, flush=True)
    write_csv("gpu-cross.csv", [{"check": k, "passed": v} for k, v in cross.items()], out=args.out)
    peak_ops = int8_rate(device, args.gemm)
    rows = []
    for batch in map(int, args.batches.split(",")):
        lz = lmzip.LMZip(here.lm, batch_size=batch)
        lz.decompress(lz.compress(data[:2000]))  # kernels chosen and compiled before any timing

        def packed(b: int):  # the first b bytes compressed, timed
            _reset(device)
            return _timed(device, lambda: lz.compress(data[:b]))

        def unpacked(b: int):  # a file of the first b bytes decompressed, timed
            file = lz.compress(data[:b])
            _reset(device)
            return _timed(device, lambda: lz.decompress(file))

        (blob, c_s), n = _fitted(packed, len(data), args.probe_bytes, args.seconds)
        tokens, c_peak = lz.last_stats.tokens, _peak(device)
        (back, d_s), m = _fitted(unpacked, args.decode_bytes, args.probe_bytes // 10, args.seconds)
        assert back == data[:m], f"batch {batch}: the round trip differs"
        rows.append({"batch": batch, "in_flight": lz.workers.in_flight, "input_bytes": n, "output_bytes": len(blob),
                     "bits_per_byte": round(8 * len(blob) / n, 4),
                     "sample_bits_per_byte": round(8 * len(lz.compress(sample)) / len(sample), 4),
                     "cpu_default_sample_bits_per_byte": round(8 * len(want) / len(sample), 4),
                     "compress_s": round(c_s, 2), "compress_MB_s": round(n / c_s / 1e6, 4),
                     "compress_tokens_s": round(tokens / c_s),
                     "compress_roofline": round(2 * weights * tokens / c_s / peak_ops, 5),
                     "decode_bytes": m, "decompress_s": round(d_s, 2),
                     "decompress_KB_s": round(m / d_s / 1e3, 2),
                     "compress_peak_MB": round(c_peak), "decompress_peak_MB": round(_peak(device))})
        print(rows[-1], flush=True)
        write_csv("gpu.csv", rows, out=args.out)  # after every batch size: a run cut short keeps its rows
    lines = [f"# The integer engine on {args.device}", "", provenance(), "",
             f"Input: the corpus joined and repeated to {len(data)} bytes; decompress timed on a file of its first "
             f"{args.decode_bytes} bytes, decoded and compared byte for byte; sample = its first {len(sample)} bytes. "
             f"int8 GEMM ({args.gemm}^3, `torch._int_mm`): {peak_ops / 1e12:.1f} TOP/s; roofline = 2 x "
             f"{weights} weights x tokens/s over it.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---:|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    lines += ["", "Across devices, on the sample:", ""]
    lines += [f"- {what}: {'yes' if ok else 'NO'}" for what, ok in cross.items()]
    write("gpu.md", "\n".join(lines) + "\n", out=args.out)
    if not all(cross.values()):
        raise SystemExit("gpu: a cross-device check failed (gpu.md)")


if __name__ == "__main__":
    main()
