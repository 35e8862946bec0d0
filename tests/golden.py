"""The golden files: small .lmz files made once and committed, which every CI run decodes byte for byte.

``python tests/golden.py`` writes them again; that is right only with a new format or engine
revision (then say so in docs/FORMAT.md). Each ``NAME.lmz`` in tests/data decodes to ``NAME.orig``,
and so does each ``NAME.lmz`` of an older format or engine in its folder (``v9/``, mixer mix/2;
``v8/``, engine int/2; ``v7/``, mixer mix/1; ``v6/``, engine int/1; ``v5/``), which stays as it
was made.
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
# where each format's files are; only the newest is written
FORMATS = {"v10": DATA, "v9": DATA / "v9", "v8": DATA / "v8", "v7": DATA / "v7", "v6": DATA / "v6", "v5": DATA / "v5"}

SAMPLES = {
    "text": b"It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin "
            b"nuzzled into his breast in an effort to escape the vile wind, slipped quickly through the glass doors.\n",
    "code": b"def gcd(a: int, b: int) -> int:\n    \"\"\"Greatest common divisor.\"\"\"\n    while b:\n"
            b"        a, b = b, a % b\n    return a\n\n\nprint(gcd(1071, 462))\n",
    "unicode": "Grüße aus Zürich — 日本語のテキスト, emoji 🐇🧩, combining e\u0301, CRLF\r\nNBSP\u00a0end.\n".encode(),
    "binary": bytes(range(256)) + b" and then some text that is long enough to be a text chunk of its own, "
              b"after the binary run. " + bytes(range(255, -1, -1)),
}
MODELS = {"tiny": None, "smollm2": "smollm2-135m"}  # tiny: conftest.build_golden_model


def main() -> None:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import build_golden_model

    from lmzip import LMZip

    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for tag, spec in MODELS.items():
            codec = LMZip(spec or str(build_golden_model(Path(tmp) / "golden")), context=32 if spec is None else 512)
            for name, data in SAMPLES.items():
                (DATA / f"{tag}-{name}.orig").write_bytes(data)
                (DATA / f"{tag}-{name}.lmz").write_bytes(codec.compress(data))
                print(tag, name, len(data), "->", (DATA / f"{tag}-{name}.lmz").stat().st_size)


if __name__ == "__main__":
    main()
