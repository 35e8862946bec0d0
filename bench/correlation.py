"""The paper's correlation analysis, reproduced: report and plots into benchmarks/correlation/.

    python bench/correlation.py

Runs ``lmzip correlate --paper`` and records the machine, versions and command beside it.
"""

from __future__ import annotations

from common import OUT, provenance

from lmzip.cli import main as lmzip_main


def main() -> None:
    out = OUT / "correlation"
    lmzip_main(["correlate", "--paper", "--out", str(out)], standalone_mode=False)
    report = out / "report.md"
    report.write_text(report.read_text() + "\n" + provenance() + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
