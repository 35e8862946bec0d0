"""The integer engine against the float32 engine, side by side in one run: portability, ratio, speed.

    python bench/int_engine.py [--sample-bytes 8000] [--chunk-tokens 512] [--small-bytes 24000]
                               [--parts portability,ratio,speed]

Writes benchmarks/int-engine-CLASS.md (and .csv files beside it), CLASS the CPU kernel class torch
runs here (avx2, avx512), since the speeds differ between them by far more than noise:

- portability: a file compressed here decodes byte for byte in a fresh process with 1 thread, under
  ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (where the int8 GEMM fails its self-test and
  the portable one runs) and at another decoder batch size; and a file compressed under that cap
  decodes here. The float engine's file is tried the same way.
- ratio: file bits per byte of both engines on the first ``--sample-bytes`` of every corpus file,
  at the same chunking and context, every integer-engine round trip verified.
- speed: ``lmzip compress`` and ``decompress`` as commands (start-up included) on a 200-byte file
  and on the first ``--small-bytes`` of alice29, at the defaults, both engines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import CORPUS, corpus_files, provenance, write, write_csv

import lmzip

CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _cli(args: list[str], env: dict | None = None) -> tuple[int, float, str]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmzip", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return done.returncode, time.perf_counter() - began, (done.stderr.strip().splitlines() or [""])[-1]


def portability(tmp: Path, sample: bytes) -> list[dict]:
    src = tmp / "sample.txt"
    src.write_bytes(sample)
    rows = []
    for engine in ("int", "float"):
        for enc_name, enc_env in (("here", {}), ("AVX2 cap", CAP)):
            packed = tmp / f"{engine}-{enc_name[:4]}.lmz"
            rc, _, err = _cli(["compress", str(src), "-o", str(packed), "-f", "-q", "--engine", engine], enc_env)
            if rc:
                raise SystemExit(f"compress failed: {err}")
            decoders = [("1 thread", {}, ["--threads", "1"]), ("AVX2 cap", CAP, []),
                        ("batch size 1", {}, ["--batch-size", "1"])] if enc_name == "here" else [("here", {}, [])]
            for dec_name, dec_env, extra in decoders:
                back = tmp / "back.txt"
                rc, _, err = _cli(["decompress", str(packed), "-o", str(back), "-f", "-q", *extra], dec_env)
                ok = rc == 0 and back.read_bytes() == sample
                rows.append({"engine": engine, "compressed": enc_name, "decompressed": dec_name,
                             "result": "byte-exact" if ok else f"exit {rc}: {err}"})
                print(rows[-1], flush=True)
    return rows


def ratio(sample_bytes: int, chunk_tokens: int) -> list[dict]:
    rows = []
    codecs = {e: lmzip.LMZip(engine=e, chunk_tokens=chunk_tokens) for e in ("int", "float")}
    for path in corpus_files():
        data = path.read_bytes()[:sample_bytes]
        row = {"file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name, "bytes": len(data)}
        for engine, codec in codecs.items():
            blob = codec.compress(data)
            if engine == "int" and lmzip.LMZip(codec.lm, engine=engine).decompress(blob) != data:
                raise SystemExit(f"round trip FAILED: {path} ({engine})")
            row[f"{engine}_bytes"] = len(blob)
            row[f"{engine}_ce_bits"] = round(codec.last_stats.ce_bits, 1)
        row["int_over_float_pct"] = round(100 * (row["int_bytes"] / row["float_bytes"] - 1), 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def speed(tmp: Path, small_bytes: int) -> list[dict]:
    alice = (CORPUS / "prose" / "alice29.txt").read_bytes()
    rows = []
    for label, data in (("200 bytes", alice[:200]), (f"first {small_bytes} bytes of alice29", alice[:small_bytes])):
        src = tmp / "in.txt"
        src.write_bytes(data)
        for engine in ("float", "int"):
            packed, back = tmp / "in.lmz", tmp / "back.txt"
            rc, c_s, err = _cli(["compress", str(src), "-o", str(packed), "-f", "-q", "--engine", engine])
            rc2, d_s, err2 = _cli(["decompress", str(packed), "-o", str(back), "-f", "-q"])
            if rc or rc2 or back.read_bytes() != data:
                raise SystemExit(f"speed round trip failed: {err} {err2}")
            rows.append({"input": label, "engine": engine, "bytes": len(data), "lmz_bytes": packed.stat().st_size,
                         "compress_s": round(c_s, 1), "decompress_s": round(d_s, 1),
                         "compress_B_s": round(len(data) / c_s, 1), "decompress_B_s": round(len(data) / d_s, 1)})
            print(rows[-1], flush=True)
    return rows


def _table(rows: list[dict]) -> list[str]:
    cols = list(rows[0])
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample-bytes", type=int, default=8000)
    ap.add_argument("--chunk-tokens", type=int, default=512)
    ap.add_argument("--small-bytes", type=int, default=24000)
    ap.add_argument("--portability-bytes", type=int, default=1000)
    ap.add_argument("--parts", default="portability,ratio,speed")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    cpu = torch.backends.cpu.get_cpu_capability().lower()
    lines = ["# The integer engine (int/1) against the float32 engine (lockstep-window-kv/4)", "", provenance(), ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample = (CORPUS / "prose" / "alice29.txt").read_bytes()[5000 : 5000 + args.portability_bytes]
        if "portability" in parts:
            port = portability(tmp, sample)
            write_csv(f"int-engine-{cpu}-portability.csv", port)
            lines += ["## Portability", "", f"{len(sample)} bytes of alice29, compressed by `lmzip compress` at the "
                      "defaults in one process, decompressed in another.", "", *_table(port), ""]
        if "ratio" in parts:
            rat = ratio(args.sample_bytes, args.chunk_tokens)
            write_csv(f"int-engine-{cpu}-ratio.csv", rat)
            lines += ratio_section(rat, args)
        if "speed" in parts:
            spd = speed(tmp, args.small_bytes)
            write_csv(f"int-engine-{cpu}-speed.csv", spd)
            lines += ["## Speed", "", "Wall time of `lmzip compress` and `lmzip decompress` as commands, start-up "
                      "(model load, quantisation, GEMM self-test) included, at the defaults, one after another.", "",
                      *_table(spd), ""]
    write(f"int-engine-{cpu}.md", "\n".join(lines))


def ratio_section(rat: list[dict], args: argparse.Namespace) -> list[str]:
    areas = sorted({r["area"] for r in rat})
    summary = []
    for area in [*areas, "all"]:
        sel = [r for r in rat if area in ("all", r["area"])]
        b = sum(r["bytes"] for r in sel)
        i, f = sum(r["int_bytes"] for r in sel), sum(r["float_bytes"] for r in sel)
        summary.append({"area": area, "bytes": b, "int bits/byte": f"{8 * i / b:.4f}",
                        "float bits/byte": f"{8 * f / b:.4f}", "int over float": f"{100 * (i / f - 1):+.2f}%"})
    return ["## Ratio", "", f"File bits per byte, the first {args.sample_bytes} bytes of every corpus file, "
            f"chunks of {args.chunk_tokens} tokens, context {lmzip.codec.DEFAULT_CONTEXT}, both engines in one "
            "process; every integer-engine file decoded again and compared (the float engine's round "
            "trips are the test suite's and the portability table's).", "", *_table(summary), "", *_table(rat), ""]


if __name__ == "__main__":
    main()
