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
    from lmzip.engine import ENGINE
    from lmzip.predictor import ENGINE as INT_ENGINE

    return "\n".join([
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), torch threads {torch.get_num_threads()}, "
        f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"CUDA {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numba {numba.__version__}",
        f"- lmzip: commit {COMMIT}, engines {INT_ENGINE} (integer, the default) and {ENGINE} (float)",
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


def int8_rate(device: torch.device, n: int) -> float:
    """int8 operations a second of ``torch._int_mm`` on an ``n x n x n`` product, best of 6."""
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
    best = float("inf")
    for _ in range(6):
        sync(device)
        began = time.perf_counter()
        torch._int_mm(a, a)
        sync(device)
        best = min(best, time.perf_counter() - began)
    return 2 * n**3 / best


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a CPU has none), so that a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def multiplied_weights(model) -> int:
    """The int8 weights an ``intmodel.IntModel`` multiplies each token by: every layer's linear
    layers and the head (the embedding is gathered, not multiplied)."""
    return model.head.q.size + sum(getattr(layer, name).q.size for layer in model.layers
                                   for name in ("q", "k", "v", "o", "gate", "up", "down"))
