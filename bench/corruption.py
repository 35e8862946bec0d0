"""A corruption campaign: damaged .lmz files of every corpus file, each decoded, every outcome counted.

    python bench/corruption.py [--bytes 512] [--frame-bytes 128] [--flips 960] [--workers 2]
                               [--default-model-flips 24]

For each corpus file, its first ``--bytes`` bytes are compressed with the tiny golden model
(tests/conftest.py: the same weights on every machine) in chunks of 32 tokens and frames of
``--frame-bytes``, so that the file has several frames and chunks, and then damaged:
single-bit flips at ``--flips`` positions spread evenly over header, tables, payloads and
footer; truncation at every 1/64 of the length; splices with every other file's compressed
bytes at 8 cut points (but a splice that is the other file itself, as two files of one length
cut within their common header are); two 8-byte regions swapped (a part moved to another
place); whole frames swapped, moved, dropped and repeated; decoding with another model. The
default model's golden files (tests/data) get ``--default-model-flips`` flips, the truncations
and the region moves each. A damaged file must decode to its original bytes or raise a named
lmzip error; a wrong output, any other exception, and a decode stopped after
``damage.SLOW_SECONDS`` are counted apart, and printed. Writes benchmarks/corruption.md.
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

from common import ROOT, corpus_files, provenance, write

sys.path.insert(0, str(ROOT / "tests"))
import damage  # noqa: E402
from golden import DATA  # noqa: E402

CHUNK_TOKENS = 32


def _cases(blob: bytes, others: list[bytes], flips: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """(damage kind, damaged bytes) for one compressed file."""
    from lmzip import container

    archive = container.parse(blob)
    head = container.head_bytes(archive.header)
    frames = [f.to_bytes(p) for f, p in zip(archive.frames, archive.places())]
    footer = archive.footer.to_bytes()
    assert head + b"".join(frames) + footer == blob
    out = []
    for k in range(flips):
        pos = k * len(blob) // flips
        out.append(("bit flip", damage.apply(blob, [("flip", pos, rng.randrange(8))])))
    out += [("truncation", blob[: k * len(blob) // 64]) for k in range(64)]
    for other in others:
        for k in range(1, 9):
            spliced = blob[: k * len(blob) // 9] + other[k * len(other) // 9 :]
            if spliced != other:  # files of one length cut in their common start (the header) splice into the other file
                out.append(("splice", spliced))
    for _ in range(16):
        a, b = sorted(rng.sample(range(len(head), len(blob) - 8), 2))
        if b - a >= 8 and blob[a : a + 8] != blob[b : b + 8]:
            moved = bytearray(blob)
            moved[a : a + 8], moved[b : b + 8] = blob[b : b + 8], blob[a : a + 8]
            out.append(("region moved", bytes(moved)))
    n = len(frames)
    for i in range(n):
        rest = frames[:i] + frames[i + 1 :]
        out.append(("frame dropped", head + b"".join(rest) + footer))
        out.append(("frame repeated", head + b"".join(frames[: i + 1] + frames[i:]) + footer))
        if n > 1:
            j = (i + 1) % n
            swapped = list(frames)
            swapped[i], swapped[j] = frames[j], frames[i]
            out.append(("frames swapped", head + b"".join(swapped) + footer))
            out.append(("frame moved", head + b"".join(rest[:j] + [frames[i]] + rest[j:]) + footer))
    return out


def _count(counts: collections.Counter, findings: list[str], name: str, kind: str, result: str) -> None:
    """Count one outcome: the original bytes, a named error, or a finding (wrong output, crash, slow)."""
    outcome = {"WRONG": "silent wrong output", "CRASH": "crash", "SLOW": "slow"}.get(result.split()[0], result)
    counts[kind, outcome] += 1
    if damage.is_finding(result):
        findings.append(f"{name} {kind}: {result}")


def _worker(job: tuple) -> tuple[collections.Counter, list[str]]:
    """Compress, damage and decode the files of one job; (kind, outcome) counts and the findings."""
    files, flips, size, frame_bytes, model_dir, wrong_dir, seed, default_flips = job
    from lmzip import LMZip, container

    default_frame = container.FRAME_BYTES
    container.FRAME_BYTES = frame_bytes  # what the encoder cuts at; the decoder's bound falls with it
    codec = LMZip(model_dir, chunk_tokens=CHUNK_TOKENS, batch_size=1, threads=1)  # one core a worker
    counts, findings = collections.Counter(), []
    rng = random.Random(seed)
    blobs = {f: codec.compress(Path(f).read_bytes()[:size]) for f in files[0]}
    for f in files[0]:
        original = Path(f).read_bytes()[:size]
        others = [b for g, b in blobs.items() if g != f]
        for kind, damaged in _cases(blobs[f], others, flips, rng):
            result = damage.outcome(lambda: codec.decompress(damaged), original, damage.SLOW_SECONDS)
            _count(counts, findings, Path(f).name, kind, result)
        print(f"{Path(f).name}: {sum(counts.values())} cases so far", file=sys.stderr, flush=True)
        wrong = LMZip(wrong_dir, batch_size=1, threads=1)
        result = damage.outcome(lambda: wrong.decompress(blobs[f]), original, damage.SLOW_SECONDS)
        _count(counts, findings, Path(f).name, "wrong model", result)
    container.FRAME_BYTES = default_frame  # the default model's golden files have frames of their own size
    if files[1]:
        smol = LMZip("smollm2-135m", device="cpu", threads=1)
        for path in files[1]:
            blob, original = path.read_bytes(), path.with_suffix(".orig").read_bytes()
            for kind, damaged in _cases(blob, [], default_flips, rng):
                _count(counts, findings, path.name, f"{kind} (default model)",
                       damage.outcome(lambda: smol.decompress(damaged), original, damage.SLOW_SECONDS))
    return counts, findings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=512, help="bytes of each corpus file compressed")
    ap.add_argument("--flips", type=int, default=960, help="single-bit flips a file (tiny model)")
    ap.add_argument("--frame-bytes", type=int, default=128, help="frame length the encoder cuts at (tiny model)")
    ap.add_argument("--default-model-flips", type=int, default=24, help="flips of each default-model golden file")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from conftest import build_golden_model, build_tiny_model

    files = [str(p) for p in corpus_files()]
    smol = sorted(DATA.glob("smollm2-*.lmz")) if args.default_model_flips else []
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_golden_model(Path(tmp) / "golden"))
        wrong_dir = str(build_tiny_model(Path(tmp) / "other", seed=1))
        jobs = [((files[w :: args.workers], smol[w :: args.workers]), args.flips, args.bytes, args.frame_bytes,
                 model_dir, wrong_dir, w, args.default_model_flips) for w in range(args.workers)]
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(_worker, jobs)
    seconds = time.time() - began
    counts = sum((c for c, _ in parts), collections.Counter())
    findings = [f for _, fs in parts for f in fs]
    kinds = sorted({k for k, _ in counts})
    outcomes = sorted({o for _, o in counts})
    total = sum(counts.values())
    named = sum(v for (k, o), v in counts.items() if o not in ("original", "silent wrong output", "crash", "slow"))
    kept, silent, crash, slow = (sum(v for (k, o), v in counts.items() if o == x)
                                 for x in ("original", "silent wrong output", "crash", "slow"))
    md = ["# Corruption campaign", "",
          f"{total} damaged files of {len(files)} corpus files (their first {args.bytes} bytes, tiny golden model, "
          f"{CHUNK_TOKENS}-token chunks, frames of {args.frame_bytes} bytes) and {len(smol)} default-model golden "
          f"files, in {seconds / 60:.1f} minutes.", "",
          "| tried | detected (a named error) | decoded to the original bytes | silent wrong output | crash | slow |",
          "|---:|---:|---:|---:|---:|---:|", f"| {total} | {named} | {kept} | **{silent}** | **{crash}** | **{slow}** |",
          "",
          "`original` counts damage that left the decoded bytes as they were (a flip in a field no decoder "
          "reads, such as the model name, which the fingerprint stands behind). A crash is any exception that is not a named "
          f"lmzip error; slow, a decode stopped after {damage.SLOW_SECONDS} s. By damage and outcome:", "",
          "| damage | " + " | ".join(outcomes) + " | total |", "|---|" + "---:|" * (len(outcomes) + 1),
          *[f"| {k} | " + " | ".join(str(counts[k, o]) for o in outcomes) + f" | {sum(counts[k, o] for o in outcomes)} |"
            for k in kinds],
          "| all | " + " | ".join(str(sum(counts[k, o] for k in kinds)) for o in outcomes) + f" | {total} |", ""]
    if findings:
        md += ["## Findings", "", *[f"- `{f}`" for f in findings[:50]], ""]
    md += [provenance(), ""]
    write("corruption.md", "\n".join(md))
    for f in findings[:20]:
        print(f)


if __name__ == "__main__":
    main()
