"""Every mixer revision on the same logits: the model runs once, each mixer replays its output.

    python bench/mixer_replay.py [--bytes 16000] [--keep /tmp/lmzip-logits] [--model smollm2-135m]

Each corpus file's first ``--bytes`` bytes are compressed once at the defaults, and every block of
integer logits the encoder hands the mixer is kept on disk (``--keep``; about 200 KB a token with
SmolLM2's 49,152-token vocabulary). Then the model alone and each revision of ``mixer.REVISIONS``
replay the blocks in the encoder's order, each chunk from a fresh state, and the tables they
leave are measured as the coder codes them (``quantize.int_intervals``): bits of every revision
on the very same logits, so a change to the mixer is measured in a minute, not a model's run.
The bits are the tables' cross-entropy, before the range coder and the container (which add
under 0.01% and a few bytes a chunk: benchmarks/roundtrip-*.md). Writes
benchmarks/mixer-replay.csv and .md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import CORPUS, corpus_files, provenance, write, write_csv

import lmzip
from lmzip import mixer
from lmzip.quantize import DEFAULT_PRECISION, int_intervals


def capture(codec: lmzip.LMZip, data: bytes, keep: Path) -> tuple[list[tuple], np.ndarray]:
    """Compress ``data``, keeping what the mixer is given: ``("start", rows, length)`` for each
    group of chunks, ``("block", rows, tokens, file of its logits)`` for each block; and the exp table."""
    observe, fresh, events, exp = mixer.observe, mixer.State.fresh, [], []

    def keep_block(state, logits, rows, tokens, exp_table):
        assert np.abs(logits).max() < 2**31
        path = keep / f"{len(events)}.npy"
        np.save(path, logits.astype(np.int32))
        events.append(("block", np.array(rows), np.array(tokens), path))
        exp[:] = [np.asarray(exp_table)]
        return observe(state, logits, rows, tokens, exp_table)

    def start(rows, length, vocab, revision=mixer.REVISION):
        events.append(("start", rows, length))
        return fresh(rows, length, vocab, revision)

    mixer.observe, mixer.State.fresh = keep_block, start
    try:
        codec.compress(data)
    finally:
        mixer.observe, mixer.State.fresh = observe, fresh
    return events, exp[0]


def replay(events: list[tuple], revision: str | None, vocab: int, exp: np.ndarray) -> float:
    """The bits of the tables ``revision`` (None: no mixer) makes of the kept blocks."""
    bits, state = 0.0, None
    for event in events:
        if event[0] == "start":
            state = mixer.State.fresh(event[1], event[2], vocab, revision) if revision else None
            continue
        _, rows, tokens, path = event
        logits = np.load(path).astype(np.int64)
        if state is not None:
            mixer.observe(state, logits, rows, tokens, exp)
        iv = int_intervals(logits, tokens, exp, DEFAULT_PRECISION)
        bits += float(np.log2(iv[:, 3] / np.maximum(iv[:, 2], 0.5)).sum())
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=16000, help="bytes of each corpus file")
    ap.add_argument("--keep", type=Path, default=Path("/tmp/lmzip-logits"), help="where the logits are kept")
    ap.add_argument("--model", default=lmzip.DEFAULT_MODEL)
    args = ap.parse_args()
    codec = lmzip.LMZip(args.model)
    revisions = [None, *mixer.REVISIONS]
    rows, seconds = [], dict.fromkeys(revisions, 0.0)
    for path in corpus_files():
        keep = args.keep / path.relative_to(CORPUS).as_posix().replace("/", "-")
        keep.mkdir(parents=True, exist_ok=True)
        for old in keep.iterdir():
            old.unlink()
        events, exp = capture(codec, path.read_bytes()[: args.bytes], keep)
        row = {"file": path.relative_to(CORPUS).as_posix(), "area": path.parent.name,
               "tokens": sum(len(e[2]) for e in events if e[0] == "block")}
        for revision in revisions:
            began = time.perf_counter()
            row[revision or "model"] = round(replay(events, revision, codec.lm.vocab_size, exp), 1)
            seconds[revision] += time.perf_counter() - began
        rows.append(row)
        print(row, flush=True)
    write_csv("mixer-replay.csv", rows)
    total = {"file": "**all**", "tokens": sum(r["tokens"] for r in rows),
             **{k: round(sum(r[k] for r in rows), 1) for k in ["model", *mixer.REVISIONS]}}
    head = " | ".join(f"{r} bits | saved" for r in mixer.REVISIONS)
    md = [f"# Every mixer revision on the same logits, {args.model}", "",
          f"The first {args.bytes} bytes of each corpus file compressed once at the defaults; the integer logits "
          "the encoder gave the mixer kept, and replayed through each revision of the mixer, each chunk from a "
          "fresh state. Bits are the cross-entropy of the tables each leaves (the coder's own integers), before "
          "the range coder and the container; saved = against the model alone.", "",
          f"| file | tokens | model bits | {head} |", "|---|---:|---:|" + "---:|---:|" * len(mixer.REVISIONS)]
    for r in rows + [total]:
        cells = " | ".join(f"{r[k]:.0f} | {100 * (1 - r[k] / r['model']):+.2f}%" for k in mixer.REVISIONS)
        md.append(f"| {r['file']} | {r['tokens']} | {r['model']:.0f} | {cells} |")
    md += ["", "Replay time, all files: " + ", ".join(f"{k or 'model alone'} {v:.0f} s" for k, v in seconds.items())
           + " (the model's run is not in it).", "", provenance()]
    write("mixer-replay.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
