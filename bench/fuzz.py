"""Long fuzzing of the container parser and the decoder: the property of tests/test_fuzz.py, for minutes or hours.

    python bench/fuzz.py [--minutes 30] [--workers 2]

Each worker draws damages (``tests/damage.py``: bit flips, bytes set, truncations, insertions,
deletions, header fields and chunk-table and footer numbers rewritten with every checksum made sound) of
the committed seed corpus (tests/data), parses every damaged file, and decodes those of the
tiny golden model with that model. Any outcome but the original bytes or a named lmzip error is
a finding (a decode stopped after ``damage.SLOW_SECONDS`` too), printed with the operations that
replay it. Writes benchmarks/fuzz.md.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, provenance, write

sys.path.insert(0, str(ROOT / "tests"))
import damage  # noqa: E402
from golden import DATA, SAMPLES  # noqa: E402


def _worker(args: tuple[int, float, str]) -> tuple[collections.Counter, list[str]]:
    seed, deadline, model_dir = args
    from lmzip import LMZip, container

    codec = LMZip(model_dir, batch_size=2, threads=1)  # one core a worker
    seeds = [(f"tiny-{n}", (DATA / f"tiny-{n}.lmz").read_bytes(), (DATA / f"tiny-{n}.orig").read_bytes())
             for n in SAMPLES]
    seeds += [(p.stem, p.read_bytes(), None) for p in sorted(DATA.glob("smollm2-*.lmz"))]
    codec.decompress(seeds[0][1])  # loads numba's compiled kernels, so the first case is not timed on them
    rng, counts, findings = random.Random(seed), collections.Counter(), []
    while time.time() < deadline:
        name, blob, original = rng.choice(seeds)
        ops = damage.random_ops(rng, len(blob), rng.randint(1, 4))
        damaged = damage.apply(blob, ops)
        if original is None:  # the default model's seeds: the parser alone
            result = damage.outcome(lambda: container.members(damaged) and b"", b"")
            result = "parsed" if result == "original" else result
        else:
            result = damage.outcome(lambda: codec.decompress(damaged), original, limit=damage.SLOW_SECONDS)
        counts[result if not damage.is_finding(result) else "finding"] += 1
        if damage.is_finding(result):
            findings.append(f"{name} {damage.describe(ops)}: {result}")
    return counts, findings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_golden_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_golden_model(Path(tmp) / "golden"))
        began = time.time()
        deadline = began + 60 * args.minutes
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(_worker, [(w, deadline, model_dir) for w in range(args.workers)])
        seconds = time.time() - began
    counts = sum((c for c, _ in parts), collections.Counter())
    findings = [f for _, fs in parts for f in fs]
    total = sum(counts.values())
    md = ["# Fuzzing the parser and the decoder", "",
          f"{args.workers} workers for {seconds / 60:.1f} minutes each ({args.workers * seconds / 3600:.2f} "
          f"worker-hours): {total} damaged files, {len(findings)} findings. A damaged file passes when it decodes "
          "to its original bytes or raises a named lmzip error; a wrong output, any other exception, or a decode "
          f"stopped after {damage.SLOW_SECONDS} s (SLOW) is a finding.",
          "", "| outcome | files |", "|---|---:|",
          *[f"| {k} | {v} |" for k, v in counts.most_common()], ""]
    if findings:
        md += ["## Findings", "", *[f"- `{f}`" for f in findings[:50]], ""]
    md += [provenance(), ""]
    write("fuzz.md", "\n".join(md))
    for f in findings[:20]:
        print(f)


if __name__ == "__main__":
    main()
