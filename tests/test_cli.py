"""The command line as a gzip user meets it: files, stdin/stdout, -o -c -k -f -d, errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lmzip.cli import main
from lmzip.errors import ChecksumError, InputError, NotLmzipError, OutputExistsError

TEXT = "Le cœur a ses raisons que la raison ne connaît point.\n".encode() * 30


@pytest.fixture
def run(tiny_model_dir):
    runner = CliRunner()

    def invoke(*args, stdin: bytes | None = None):
        args = [str(a) for a in args]
        if args[0] == "compress":
            args += ["-m", str(tiny_model_dir), "--chunk-tokens", "64", "--batch-size", "4"]
        return runner.invoke(main, args, input=stdin, catch_exceptions=False)

    return invoke


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "note.txt"
    path.write_bytes(TEXT)
    return path


def test_compress_then_decompress_keeps_inputs(run, src, tmp_path):
    assert run("compress", src, "--stats").exit_code == 0
    lmz = tmp_path / "note.txt.lmz"
    assert lmz.exists() and src.read_bytes() == TEXT
    src.rename(tmp_path / "original.txt")
    result = run("decompress", lmz)
    assert result.exit_code == 0, result.output
    assert src.read_bytes() == TEXT and lmz.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_stdin_to_stdout_and_d_flag(run):
    packed = run("compress", "-", stdin=TEXT)
    assert packed.exit_code == 0
    unpacked = run("decompress", "-", stdin=packed.stdout_bytes)
    assert unpacked.stdout_bytes == TEXT
    assert run("compress", "-d", "-c", "-", stdin=packed.stdout_bytes).stdout_bytes == TEXT


def test_existing_output_needs_force(run, src, tmp_path):
    out = tmp_path / "x.lmz"
    out.write_bytes(b"precious")
    result = run("compress", src, "-o", out)
    assert result.exit_code == OutputExistsError.exit_code
    assert out.read_bytes() == b"precious"
    assert "already exists" in result.output
    assert run("compress", src, "-o", out, "-f").exit_code == 0
    assert out.read_bytes().startswith(b"\x89LMZ")


def test_rm_deletes_input_only_when_asked(run, src, tmp_path):
    assert run("compress", src, "--rm").exit_code == 0
    assert not src.exists()
    assert run("decompress", tmp_path / "note.txt.lmz", "--rm").exit_code == 0
    assert src.read_bytes() == TEXT and not (tmp_path / "note.txt.lmz").exists()


def test_missing_input(run, tmp_path):
    result = run("compress", tmp_path / "nope.txt")
    assert result.exit_code == InputError.exit_code
    assert "no such file" in result.output


def test_not_lmzip_and_damaged(run, src, tmp_path):
    result = run("decompress", src, "-o", tmp_path / "out")
    assert result.exit_code == NotLmzipError.exit_code
    assert not (tmp_path / "out").exists()
    run("compress", src)
    lmz = tmp_path / "note.txt.lmz"
    blob = bytearray(lmz.read_bytes())
    blob[-5] ^= 1
    lmz.write_bytes(bytes(blob))
    result = run("decompress", lmz, "-o", tmp_path / "out")
    assert result.exit_code == ChecksumError.exit_code
    assert not (tmp_path / "out").exists()
    assert run("verify", lmz).exit_code == ChecksumError.exit_code


def test_verify_info_models(run, src, tmp_path):
    run("compress", src)
    lmz = tmp_path / "note.txt.lmz"
    assert "OK" in run("verify", lmz).output
    info = run("info", lmz).output
    assert f"{len(TEXT)} bytes" in info and "bits per byte" in info
    assert '"chunks"' in run("info", lmz, "--json").output
    listing = run("models").output
    assert "smollm2-135m" in listing and "gemma3-270m" in listing


def test_unknown_suffix_needs_output(run, src):
    result = run("decompress", src)
    assert result.exit_code == InputError.exit_code and "suffix" in result.output


def test_console_script_help_teaches():
    out = subprocess.run([sys.executable, "-m", "lmzip", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0
    assert "lmzip compress book.txt" in out.stdout and "Exit codes" in out.stdout


def test_bench_compares_with_classical_compressors(tiny_model_dir, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_bytes(TEXT)
    (folder / "b.txt").write_bytes(TEXT[::-1])
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["bench", str(folder), "-m", str(tiny_model_dir), "--chunk-tokens", "64",
                                       "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "xz -9e" in result.output and f"lmzip {tiny_model_dir}" in result.output
    import csv

    rows = list(csv.DictReader(open(out)))
    assert {r["round_trip"] for r in rows} == {"ok"} and len({r["file"] for r in rows}) == 2
    gz = next(r for r in rows if r["compressor"] == "gzip -9" and r["file"] == "a.txt")
    import gzip

    assert int(gz["compressed"]) == len(gzip.compress(TEXT, 9, mtime=0))
