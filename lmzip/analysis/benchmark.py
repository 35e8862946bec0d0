"""Ratio benchmark: lmzip beside the classical compressors, every round trip verified.

Each baseline is a (compress, decompress) pair in ``BASELINES``; ``measure`` runs one on a
file, decodes the result and refuses a mismatch. The same rows feed ``lmzip bench`` and
``bench/ratio.py``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..codec import LMZip


@dataclass(frozen=True)
class Baseline:
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def _optional_baselines() -> dict[str, Baseline]:
    """brotli and PPMd when their packages are installed (the 'bench' extra)."""
    out = {}
    try:
        import brotli

        out["brotli -q 11"] = Baseline(lambda d: brotli.compress(d, quality=11), brotli.decompress)
    except ImportError:
        pass
    try:
        import pyppmd

        out["PPMd H o8 64M"] = Baseline(lambda d: pyppmd.compress(d, max_order=8, mem_size=64 << 20),
                                        lambda c: pyppmd.decompress(c, max_order=8, mem_size=64 << 20))
    except ImportError:
        pass
    return out


BASELINES: dict[str, Baseline] = {
    "gzip -9": Baseline(lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
    "bzip2 -9": Baseline(lambda d: bz2.compress(d, 9), bz2.decompress),
    "xz -9e": Baseline(lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    "zstd -19": Baseline(lambda d: zstandard.ZstdCompressor(level=19).compress(d),
                         lambda c: zstandard.ZstdDecompressor().decompress(c)),
    "zstd --ultra -22": Baseline(lambda d: zstandard.ZstdCompressor(level=22).compress(d),
                                 lambda c: zstandard.ZstdDecompressor().decompress(c)),
    **_optional_baselines(),
}


def row(path: Path, compressor: str, data: bytes, packed_size: int, compress_s: float, decompress_s: float,
        area: str | None = None) -> dict:
    return {"file": path.name, "area": area or path.parent.name, "compressor": compressor, "bytes": len(data),
            "compressed": packed_size, "bits_per_byte": round(8 * packed_size / max(len(data), 1), 4),
            "compress_s": round(compress_s, 3), "decompress_s": round(decompress_s, 3), "round_trip": "ok"}


def _timed(fn, arg):
    began = time.perf_counter()
    out = fn(arg)
    return out, time.perf_counter() - began


def measure(path: Path, name: str, codec: Callable[[bytes], bytes], decodec: Callable[[bytes], bytes],
            area: str | None = None) -> dict:
    """Compress, decompress and compare one file with one compressor."""
    data = path.read_bytes()
    packed, t_c = _timed(codec, data)
    back, t_d = _timed(decodec, packed)
    if back != data:
        raise RuntimeError(f"{name} did not round-trip {path}")
    return row(path, name, data, len(packed), t_c, t_d, area)


def baseline_rows(path: Path, area: str | None = None) -> list[dict]:
    return [measure(path, name, b.compress, b.decompress, area) for name, b in BASELINES.items()]


def lmzip_name(model: str, dtype: str) -> str:
    """A row's compressor name: ``lmzip MODEL``, and the dtype after it unless float32."""
    return f"lmzip {model}" + ("" if dtype == "float32" else f" {dtype}")


def lmzip_row(lz: LMZip, path: Path, area: str | None = None) -> dict:
    """lmzip on one file, decoded again by a fresh codec on the same model."""
    return measure(path, lmzip_name(lz.lm.name, lz.lm.dtype_name), lz.compress, LMZip(lz.lm).decompress, area)


def summary(rows: list[dict]) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """Bits per byte by compressor and area (total bits over total bytes), with an 'all' column.

    A compressor that lacks some of an area's files gets None there, never a partial figure.
    """
    areas = sorted({r["area"] for r in rows})
    files = {a: {r["file"] for r in rows if r["area"] == a} for a in areas}
    table: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys(r["compressor"] for r in rows):
        mine = [r for r in rows if r["compressor"] == name]
        table[name] = {}
        for a in areas + ["all"]:
            part = [r for r in mine if a in ("all", r["area"])]
            whole = set().union(*files.values()) if a == "all" else files[a]
            covered = {r["file"] for r in part} == whole
            table[name][a] = 8 * sum(r["compressed"] for r in part) / sum(r["bytes"] for r in part) if covered else None
    return areas + ["all"], table


def markdown(rows: list[dict]) -> str:
    columns, table = summary(rows)
    lines = ["| compressor | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    ranked = sorted(table.items(), key=lambda kv: (kv[1]["all"] is None, kv[1]["all"] or 0))
    for name, values in ranked:
        lines.append(f"| {name} | " + " | ".join("—" if values[c] is None else f"{values[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path, title: str) -> Path:
    """Grouped bars of bits per byte, one group per area, one bar per compressor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns, table = summary(rows)
    names = sorted(table, key=lambda n: -(table[n]["all"] or 0))
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=150)
    width = 0.8 / len(names)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        xs = np.arange(len(columns)) + (i - (len(names) - 1) / 2) * width
        color = "#c0392b" if name.startswith("lmzip") else cmap(i % 10)
        ax.bar(xs, [table[name][c] or 0 for c in columns], width, label=name, color=color,
               edgecolor="black" if name.startswith("lmzip") else "none", linewidth=0.6)
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
