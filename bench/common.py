"""What every benchmark records beside its numbers: the machine, the versions and the command."""

from __future__ import annotations

import csv
import io
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("LMZIP_CORPUS", ROOT.parent / "shared" / "corpus"))
OUT = ROOT / "benchmarks"


def _commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


COMMIT = _commit()  # read when a benchmark starts: the code it runs, not the tree when it finishes


def corpus_files() -> list[Path]:
    """Every corpus file, as (area folder)/(name), in a stable order."""
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def rss(pid: int | str = "self") -> int:
    """Resident set size of a process, in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_flags() -> set[str]:
    try:
        return set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def provenance() -> str:
    """A markdown block naming the machine, the versions and the command that produced a result."""
    import numba
    import transformers

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    from lmzip.mixer import REVISION as MIXER
    from lmzip.predictor import ENGINE

    return "\n".join([
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), torch threads {torch.get_num_threads()}, "
        f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"CUDA {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numba {numba.__version__}",
        f"- lmzip: commit {COMMIT}, engine {ENGINE}, mixer {MIXER} (the defaults)",
        "- CPU flags: " + " ".join(sorted(f for f in _cpu_flags() if f.startswith(("avx", "amx", "fma")))),
        f"- command: `{' '.join(['python', 'bench/' + Path(sys.argv[0]).name, *sys.argv[1:]])}`",
    ])


def write_csv(name: str, rows: list[dict], columns: list[str] | None = None, out: Path = OUT) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns or list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write(name, buf.getvalue(), out)


def write(name: str, text: str, out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(text)
    print(f"wrote {path}")
    return path


def _ops_rate(product, device: torch.device, n: int) -> float:
    """Operations a second of ``product()``, an ``n x n x n`` product (two operations a multiply),
    best of 6, its queued device work waited for."""
    best = float("inf")
    for _ in range(6):
        sync(device)
        began = time.perf_counter()
        product()
        sync(device)
        best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best


def int8_rate(device: torch.device, n: int) -> float:
    """int8 operations a second of ``torch._int_mm`` on an ``n x n x n`` product, best of 6."""
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
    return _ops_rate(lambda: torch._int_mm(a, a), device, n)


def gemm_rate(gemm, device: torch.device, n: int) -> float:
    """Operations a second of one of ``lmzip.exact``'s kernels on an ``n x n x n`` product of
    14-bit mantissas by int8 weights, two a multiplied weight as for ``int8_rate``, best of 6:
    the roofline where ``_int_mm`` is not exact (its self-test fails) or not the fastest exact kernel."""
    w = gemm.weight(torch.randint(-127, 128, (n, n), dtype=torch.int8).numpy(), device)
    m = torch.randint(-(1 << 14), (1 << 14) + 1, (n, n), device=device)
    mult = torch.ones(n, dtype=torch.int64, device=device)
    gemm(m[:1], w, mult)  # compiled code loaded: not part of its speed
    return _ops_rate(lambda: gemm(m, w, mult), device, n)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a CPU has none), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def multiplied_weights(model) -> int:
    """The int8 weights an ``intmodel.IntModel`` multiplies each token by: every layer's linear
    layers and the head (the embedding is gathered, not multiplied)."""
    return model.head.q.size + sum(getattr(layer, name).q.size for layer in model.layers
                                   for name in ("q", "k", "v", "o", "gate", "up", "down"))


def round_trip(codec, data: bytes) -> dict:
    """``data`` through ``codec`` (an ``lmzip.LMZip``) and back through a fresh codec on the same
    model, compared byte for byte (a mismatch stops the run): the file's size, the cross-entropy
    bits before and after the mixer (``--stats``), the tokens, and both wall times."""
    import lmzip

    began = time.perf_counter()
    blob = codec.compress(data)
    compress_s = time.perf_counter() - began
    s = codec.last_stats
    began = time.perf_counter()
    back = lmzip.LMZip(codec.lm).decompress(blob)
    decompress_s = time.perf_counter() - began
    if back != data:
        raise SystemExit("round trip FAILED")
    return {"bytes": len(blob), "model_bits": round(s.ce_bits), "mixed_bits": round(s.mixed_bits),
            "tokens": s.tokens, "compress_s": compress_s, "decompress_s": decompress_s}


def side_by_side(codecs: dict, paths: list[Path], nbytes: int) -> list[dict]:
    """Each file's first ``nbytes`` (0: all of it) round-tripped by every codec of ``codecs``
    (label -> ``lmzip.LMZip``), one right after the other, so that the machine's load falls on all
    alike: a row a file, with each codec's ``round_trip`` figures prefixed by its label. Each codec
    first codes a few hundred bytes, so that loading and compiling are timed in none of them."""
    for codec in codecs.values():
        round_trip(codec, paths[0].read_bytes()[:400])
    rows = []
    for path in paths:
        data = path.read_bytes()[: nbytes or None]
        row = {"file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name, "input_bytes": len(data)}
        for label, codec in codecs.items():
            row.update({f"{label}_{k}": round(v, 2) if isinstance(v, float) else v
                        for k, v in round_trip(codec, data).items()})
        rows.append(row)
        print(row, flush=True)
    return rows

