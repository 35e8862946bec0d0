"""What the container costs a one-chunk text file: the file's bytes less its payload's bits.

    python bench/container.py

Compresses the first N bytes of one file of each corpus area at the defaults (one text chunk for
each N here), decodes each again and compares it byte for byte. The container is everything but
the range coder's bits: head, chunk table, the last payload byte's padding and the footer.
Writes benchmarks/container.md.
"""

from __future__ import annotations

from common import CORPUS, provenance, write

import lmzip
from lmzip import container
from lmzip.chunking import Kind

FILES = ["prose/alice29.txt", "code/click_core.py", "math/hott_basics.tex", "web/html"]
SIZES = [200, 1000, 4000]  # one chunk of at most 2048 tokens in every area


def main() -> None:
    codec = lmzip.LMZip()
    lines = ["| file | input bytes | chunks | file bytes | payload bits | container bytes |",
             "|---|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for name in FILES:
        for size in SIZES:
            data = (CORPUS / name).read_bytes()[:size]
            blob = codec.compress(data)
            if codec.decompress(blob) != data:
                raise SystemExit(f"{name}[:{size}] did not round-trip")
            archive = container.parse(blob)
            if len(archive.entries) != 1 or archive.entries[0].kind != Kind.LM:
                raise SystemExit(f"{name}[:{size}] is not one text chunk")
            bits = archive.entries[0].payload_bits
            cost = len(blob) - bits / 8
            worst = max(worst, cost)
            lines.append(f"| {name} | {len(data)} | 1 | {len(blob)} | {bits} | {cost:.3f} |")
    text = "\n".join([
        f"# The container of a one-chunk text file, {codec.lm.name}",
        "",
        "Container bytes = file bytes - payload bits / 8: magic, version, header and its CRC; the chunk "
        "table and its CRC; the padding of the last payload byte; the footer. Every file decoded again "
        "and compared byte for byte.",
        "",
        *lines,
        "",
        f"Largest: {worst:.3f} bytes.",
        "",
        provenance(),
        "",
    ])
    write("container.md", text)
    print(text)


if __name__ == "__main__":
    main()
