"""The integer engine against the float32 engine, side by side in one run: portability, ratio, speed.

    python bench/int_engine.py [--sample-bytes 8000] [--chunk-tokens 512] [--small-bytes 24000]
                               [--large-bytes 1000000] [--parts portability,ratio,speed]

Writes benchmarks/int-engine-CLASS.md (and .csv files beside it; int-engine-CLASS-PARTS.md for
some of the parts), CLASS the CPU kernel class torch runs here (avx2, avx512), since the speeds
differ between them by far more than noise:

- portability: a file compressed here decodes byte for byte in a fresh process with 1 thread, under
  ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (where the int8 GEMM fails its self-test and
  the portable one runs) and at another decoder batch size; and a file compressed under that cap
  decodes here. The float engine's file is tried the same way.
- ratio: file bits per byte of both engines on the first ``--sample-bytes`` of every corpus file,
  at the same chunking and context, every integer-engine round trip verified.
- speed: ``lmzip compress`` and ``decompress`` as commands (start-up included) on a 200-byte file,
  the first ``--small-bytes`` of alice29, the whole of alice29 and ``--large-bytes`` of the corpus
  joined and repeated (0: left out), at the defaults, both engines, with each command's peak RSS;
  then each input's integer-engine speed as a multiple of the float engine's, and as a fraction of
  the int8 roofline (this machine's ``torch._int_mm`` rate over two operations a multiplied weight
  a token; where the engine does not run ``_int_mm``, which fails its self-test on AVX2 CPUs, the
  rate of the exact GEMM it runs instead).

The float engine is no longer part of lmzip: its commands run from a temporary git worktree of
the last commit that had it (``lmzip.codec.LAST_FLOAT_COMMIT``), so this script needs a git
checkout. Each engine first codes a small file once, so that no timed command compiles numba's
kernels into its on-disk cache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from common import CORPUS, ROOT, corpus_files, gemm_rate, int8_rate, multiplied_weights, provenance, write, write_csv

import lmzip
from lmzip import container
from lmzip.codec import FLOAT_ENGINE, LAST_FLOAT_COMMIT
from lmzip.predictor import ENGINE as INT_ENGINE

CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _peak(pid: int) -> int:
    """A live process's peak RSS (VmHWM) in bytes; 0 once it is gone. (``ru_maxrss`` would count
    the RSS of this process, which the child had before its exec.)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


@contextlib.contextmanager
def float_lmzip() -> Iterator[dict]:
    """Where ``_cli`` runs the float engine: ``{"env": ..., "cwd": ...}`` of a temporary git worktree
    of ``LAST_FLOAT_COMMIT``, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "lmzip"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), LAST_FLOAT_COMMIT],
                       check=True, capture_output=True)
        try:
            yield {"env": {"PYTHONPATH": str(tree)}, "cwd": tree}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def _cli(args: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[int, float, str, int]:
    """Run ``lmzip ARGS`` (as the tree in ``cwd`` has it): its exit status, wall seconds, last line
    of stderr and peak RSS in bytes (read every 50 ms while it runs)."""
    with tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "lmzip", *args], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {})}, cwd=cwd)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _peak(proc.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        err.seek(0)
        last = (err.read().decode(errors="replace").strip().splitlines() or [""])[-1]
    return proc.returncode, seconds, last, peak


def portability(tmp: Path, sample: bytes, engines: dict[str, dict]) -> list[dict]:
    src = tmp / "sample.txt"
    src.write_bytes(sample)
    rows = []
    for engine, run in engines.items():
        for enc_name, enc_env in (("here", {}), ("AVX2 cap", CAP)):
            packed = tmp / f"{engine}-{enc_name[:4]}.lmz"
            rc, _, err, _ = _cli(["compress", str(src), "-o", str(packed), "-f", "-q", *run["args"]],
                                 {**run["env"], **enc_env}, run["cwd"])
            if rc:
                raise SystemExit(f"compress failed: {err}")
            decoders = [("1 thread", {}, ["--threads", "1"]), ("AVX2 cap", CAP, []),
                        ("batch size 1", {}, ["--batch-size", "1"])] if enc_name == "here" else [("here", {}, [])]
            for dec_name, dec_env, extra in decoders:
                back = tmp / "back.txt"
                rc, _, err, _ = _cli(["decompress", str(packed), "-o", str(back), "-f", "-q", *extra],
                                     {**run["env"], **dec_env}, run["cwd"])
                ok = rc == 0 and back.read_bytes() == sample
                rows.append({"engine": engine, "compressed": enc_name, "decompressed": dec_name,
                             "result": "byte-exact" if ok else f"exit {rc}: {err}"})
                print(rows[-1], flush=True)
    return rows


def ratio(tmp: Path, sample_bytes: int, chunk_tokens: int, float_run: dict) -> list[dict]:
    """Each corpus file's size under both engines: the integer one here (every file decoded again),
    the float one by its command."""
    rows = []
    codec = lmzip.LMZip(chunk_tokens=chunk_tokens, mix=False)
    src, packed = tmp / "sample", tmp / "sample.lmz"
    for path in corpus_files():
        data = path.read_bytes()[: sample_bytes or None]
        row = {"file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name, "bytes": len(data)}
        blob = codec.compress(data)
        if lmzip.LMZip(codec.lm, mix=False).decompress(blob) != data:
            raise SystemExit(f"round trip FAILED: {path}")
        row["int_bytes"] = len(blob)
        src.write_bytes(data)
        rc, _, err, _ = _cli(["compress", str(src), "-o", str(packed), "-f", "-q", "--chunk-tokens", str(chunk_tokens),
                              "--mixer", "off", *float_run["args"]], float_run["env"], float_run["cwd"])
        if rc:
            raise SystemExit(f"float compress failed: {err}")
        row["float_bytes"] = packed.stat().st_size
        row["int_over_float_pct"] = round(100 * (row["int_bytes"] / row["float_bytes"] - 1), 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def warm(tmp: Path, engines: dict[str, dict]) -> None:
    """Code a small file once with each engine, so that numba's on-disk cache is compiled before any timing."""
    src = tmp / "warm.txt"
    src.write_bytes((CORPUS / "prose" / "alice29.txt").read_bytes()[:300])
    for run in engines.values():
        for args in (["compress", str(src), "-o", str(tmp / "warm.lmz"), "-f", "-q", *run["args"]],
                     ["decompress", str(tmp / "warm.lmz"), "-o", str(tmp / "warm.out"), "-f", "-q"]):
            rc, _, err, _ = _cli(args, run["env"], run["cwd"])
            if rc:
                raise SystemExit(f"warm-up failed: {err}")


def speed_inputs(small_bytes: int, large_bytes: int) -> list[tuple[str, bytes]]:
    alice = (CORPUS / "prose" / "alice29.txt").read_bytes()
    inputs = [("200 bytes", alice[:200]), (f"first {small_bytes} bytes of alice29", alice[:small_bytes]),
              ("alice29", alice)]
    if large_bytes:
        corpus = b"".join(p.read_bytes() for p in corpus_files())
        inputs.append((f"{large_bytes} bytes of the corpus", (corpus * (large_bytes // len(corpus) + 1))[:large_bytes]))
    return inputs


def speed(tmp: Path, inputs: list[tuple[str, bytes]], engines: dict[str, dict]) -> list[dict]:
    rows = []
    for label, data in inputs:
        src = tmp / "in.txt"
        src.write_bytes(data)
        for engine, run in engines.items():
            packed, back = tmp / "in.lmz", tmp / "back.txt"
            rc, c_s, err, c_rss = _cli(["compress", str(src), "-o", str(packed), "-f", "-q", *run["args"]],
                                       run["env"], run["cwd"])
            rc2, d_s, err2, d_rss = _cli(["decompress", str(packed), "-o", str(back), "-f", "-q"], run["env"], run["cwd"])
            if rc or rc2 or back.read_bytes() != data:
                raise SystemExit(f"speed round trip failed: {err} {err2}")
            tokens = sum(e.tokens for a in container.members(packed.read_bytes()) for e in a.entries)
            rows.append({"input": label, "engine": engine, "bytes": len(data), "lmz_bytes": packed.stat().st_size,
                         "tokens": tokens,
                         "compress_s": round(c_s, 1), "decompress_s": round(d_s, 1),
                         "compress_B_s": round(len(data) / c_s, 1), "decompress_B_s": round(len(data) / d_s, 1),
                         "compress_peak_MB": round(c_rss / 1e6), "decompress_peak_MB": round(d_rss / 1e6)})
            print(rows[-1], flush=True)
    return rows


def speedups(rows: list[dict], weights: int, int8_ops: float) -> list[dict]:
    """Each input's integer-engine speed over the float engine's, from the same run, and as a
    fraction of the int8 roofline: ``2 x weights`` int8 operations a token at ``int8_ops`` a second."""
    by = {(r["input"], r["engine"]): r for r in rows}
    out = []
    for label in dict.fromkeys(r["input"] for r in rows):
        f, i = by[label, "float"], by[label, "int"]
        roof = lambda s: f"{2 * weights * i['tokens'] / s / int8_ops:.4f}"  # noqa: E731
        out.append({"input": label, "compress int/float": f"{f['compress_s'] / i['compress_s']:.2f}x",
                    "decompress int/float": f"{f['decompress_s'] / i['decompress_s']:.2f}x",
                    "int compress / roofline": roof(i["compress_s"]), "int decompress / roofline": roof(i["decompress_s"])})
    return out


def _table(rows: list[dict]) -> list[str]:
    cols = list(rows[0])
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample-bytes", type=int, default=8000, help="ratio: bytes of each file (0: whole files)")
    ap.add_argument("--chunk-tokens", type=int, default=512)
    ap.add_argument("--small-bytes", type=int, default=24000)
    ap.add_argument("--large-bytes", type=int, default=1_000_000)
    ap.add_argument("--portability-bytes", type=int, default=1000)
    ap.add_argument("--parts", default="portability,ratio,speed")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    cpu = torch.backends.cpu.get_cpu_capability().lower()
    title = f"# The integer engine ({INT_ENGINE}) against the float32 engine ({FLOAT_ENGINE})"
    lines = [title, "", provenance(), f"- float engine: `python -m lmzip` of commit {LAST_FLOAT_COMMIT}, "
             "from a git worktree", ""]
    with tempfile.TemporaryDirectory() as tmp, float_lmzip() as old:
        tmp = Path(tmp)
        engines = {"float": {**old, "args": ["--engine", "float"]}, "int": {"env": {}, "cwd": None, "args": []}}
        warm(tmp, engines)
        sample = (CORPUS / "prose" / "alice29.txt").read_bytes()[5000 : 5000 + args.portability_bytes]
        if "portability" in parts:
            port = portability(tmp, sample, engines)
            write_csv(f"int-engine-{cpu}-portability.csv", port)
            lines += ["## Portability", "", f"{len(sample)} bytes of alice29, compressed by `lmzip compress` at the "
                      "defaults in one process, decompressed in another.", "", *_table(port), ""]
        if "ratio" in parts:
            rat = ratio(tmp, args.sample_bytes, args.chunk_tokens, engines["float"])
            write_csv(f"int-engine-{cpu}-ratio.csv", rat)
            lines += ratio_section(rat, args)
        if "speed" in parts:
            spd = speed(tmp, speed_inputs(args.small_bytes, args.large_bytes), engines)
            write_csv(f"int-engine-{cpu}-speed.csv", spd)
            engine = lmzip.LMZip().lm.predictor()
            weights = multiplied_weights(engine.model)
            if engine.gemm.name == "int8":
                peak, int8_ops = "`torch._int_mm` rate", int8_rate(torch.device("cpu"), 1024)
            else:  # _int_mm failed its self-test here, or ran slower than an exact kernel
                peak = f"exact GEMM's rate (the engine's `{engine.gemm.name}` kernel, not `_int_mm`)"
                int8_ops = gemm_rate(engine.gemm, torch.device("cpu"), 1024)
            lines += ["## Speed", "", "Wall time of `lmzip compress` and `lmzip decompress` as commands, start-up "
                      "(model load from its disk cache, GEMM self-test) included, at the defaults, one after "
                      "another, every round trip compared byte for byte; peak RSS of each command.", "",
                      *_table(spd), "", "The integer engine's speed as a multiple of the float engine's, "
                      "same input, same run, and as a fraction of the int8 roofline: this machine's "
                      f"{peak}, {int8_ops / 1e9:.0f} GOP/s at 1024^3, measured in this run, over "
                      f"2 x {weights} int8 operations a token (one a multiplied weight: the embedding is not "
                      "multiplied, and the two halves of each 14-bit activation, which the engine's GEMMs multiply, "
                      "count once):", "", *_table(speedups(spd, weights, int8_ops)), ""]
    named = [p for p in ("portability", "ratio", "speed") if p in parts]
    write(f"int-engine-{cpu}.md" if len(named) == 3 else f"int-engine-{cpu}-{'-'.join(named)}.md", "\n".join(lines))


def ratio_section(rat: list[dict], args: argparse.Namespace) -> list[str]:
    areas = sorted({r["area"] for r in rat})
    summary = []
    for area in [*areas, "all"]:
        sel = [r for r in rat if area in ("all", r["area"])]
        b = sum(r["bytes"] for r in sel)
        i, f = sum(r["int_bytes"] for r in sel), sum(r["float_bytes"] for r in sel)
        summary.append({"area": area, "bytes": b, "int bits/byte": f"{8 * i / b:.4f}",
                        "float bits/byte": f"{8 * f / b:.4f}", "int over float": f"{100 * (i / f - 1):+.2f}%"})
    sample = f"the first {args.sample_bytes} bytes of every corpus file" if args.sample_bytes else "every corpus file, whole"
    return ["## Ratio", "", f"File bits per byte, {sample}, chunks of {args.chunk_tokens} tokens, context "
            f"{lmzip.codec.DEFAULT_CONTEXT}, the mixer off (it is the integer engine's alone); the integer engine in "
            "this process, every file decoded again and compared, the float engine by its command (its round "
            "trips are the portability table's).", "", *_table(summary), "", *_table(rat), ""]


if __name__ == "__main__":
    main()
