"""The command line as a gzip user meets it: files, stdin/stdout, -o -c -k -f -d -t -l, many files, errors and
exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lmzip import codec, container
from lmzip.cli import main
from lmzip.errors import (EXIT_CODES, ChecksumError, InputError, ModelError, NotLmzipError, OutputExistsError,
                          ReplayError, TruncatedError)

TEXT = "Le cœur a ses raisons que la raison ne connaît point.\n".encode() * 30


@pytest.fixture
def run(tiny_model_dir):
    runner = CliRunner()

    def invoke(*args, stdin: bytes | None = None):
        args = [str(a) for a in args]
        if args[0] == "compress":
            args[1:1] = ["-m", str(tiny_model_dir), "--chunk-tokens", "64", "--batch-size", "4"]
        elif args[0] in ("decompress", "verify"):  # files name the tiny model by path: lmzip must be told
            args[1:1] = ["-m", str(tiny_model_dir)]
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


def test_mixer_off_and_the_stats_that_compare_it(run, src, tmp_path):
    """--stats shows the bits before and after mixing; --mixer off makes them equal, and a bigger file."""
    def mixed_and_model_bits(result) -> tuple[float, float]:
        stages = dict(re.findall(r"^lmzip: (model cross-entropy|mixed) +(\d+)", result.stderr, re.M))
        return float(stages["model cross-entropy"]), float(stages["mixed"])

    on = run("compress", src, "-o", tmp_path / "on.lmz", "--stats")
    off = run("compress", src, "-o", tmp_path / "off.lmz", "--stats", "--mixer", "off")
    assert on.exit_code == off.exit_code == 0
    model_on, mixed_on = mixed_and_model_bits(on)
    model_off, mixed_off = mixed_and_model_bits(off)
    assert model_on == model_off == mixed_off and mixed_on < 0.8 * model_on  # TEXT is one line, 30 times
    assert (tmp_path / "on.lmz").stat().st_size < (tmp_path / "off.lmz").stat().st_size
    for name in ("on.lmz", "off.lmz"):
        assert run("decompress", tmp_path / name, "-c").stdout_bytes == TEXT


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


def test_console_command_pipes_whole_streams_and_keeps_exit_codes(tiny_model_dir, tmp_path):
    """``python -m lmzip`` ends without the interpreter's teardown (``cli.run``): what it wrote to a
    pipe still arrives whole, and an error keeps its exit code."""
    lmzip = [sys.executable, "-m", "lmzip"]
    model = ["-m", str(tiny_model_dir), "-q"]
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the streams keep what they hold
    packed = subprocess.run([*lmzip, "compress", "-c", "-", *model, "--chunk-tokens", "40"], input=TEXT * 3,
                            capture_output=True, timeout=300, env=buffered)
    assert packed.returncode == 0, packed.stderr[-2000:]
    back = subprocess.run([*lmzip, "decompress", "-c", "-", *model], input=packed.stdout, capture_output=True,
                          timeout=300, env=buffered)
    assert back.returncode == 0 and back.stdout == TEXT * 3
    foreign = tmp_path / "foreign.lmz"
    foreign.write_bytes(b"not an lmzip file")
    refused = subprocess.run([*lmzip, "decompress", "-c", str(foreign), *model], capture_output=True, text=True,
                             timeout=300, env=buffered)
    assert refused.returncode == NotLmzipError.exit_code and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "foreign.lmz" in refused.stderr


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


# -- many files, -t, -l, --, and every exit code (gzip and zstd habits) ----------------------------

@pytest.fixture
def three(tmp_path):
    paths = []
    for i, name in enumerate(("a.txt", "b.txt", "-dash.txt")):
        (tmp_path / name).write_bytes(TEXT[i * 100 :])
        paths.append(tmp_path / name)
    return paths


def test_many_files_each_get_their_own_output_and_a_summary(run, three, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("compress", "--", "a.txt", "b.txt", "-dash.txt")  # '--' before a name that begins with a dash
    assert result.exit_code == 0, result.output
    assert "3 of 3 files compressed" in result.stderr
    for p in three:
        p.rename(p.with_suffix(".orig"))
    assert run("decompress", "--", "a.txt.lmz", "b.txt.lmz", "-dash.txt.lmz").exit_code == 0
    for i, p in enumerate(three):
        assert p.read_bytes() == TEXT[i * 100 :]


def test_many_files_one_failure_names_its_file_and_others_go_on(run, three, tmp_path):
    result = run("compress", three[0], tmp_path / "missing.txt", three[1])
    assert result.exit_code == InputError.exit_code
    assert f"{tmp_path / 'missing.txt'}: no such file" in result.stderr
    assert (tmp_path / "a.txt.lmz").exists() and (tmp_path / "b.txt.lmz").exists()
    assert "2 of 3 files compressed" in result.stderr


def test_exit_code_is_the_worst_of_the_files(run, three, tmp_path):
    run("compress", three[0])
    (tmp_path / "b.txt.lmz").write_bytes(b"not lmzip at all")
    result = run("decompress", "-c", tmp_path / "nope.lmz", tmp_path / "b.txt.lmz", tmp_path / "a.txt.lmz")
    assert result.exit_code == NotLmzipError.exit_code  # 4 beats 1
    assert result.stdout_bytes == TEXT  # the good file still decoded


def test_test_and_list_on_many_files(run, three, tmp_path):
    run("compress", three[0], three[1])
    lmz = [tmp_path / "a.txt.lmz", tmp_path / "b.txt.lmz"]
    for args in (("verify", *lmz), ("decompress", "-t", *lmz), ("compress", "-t", *lmz)):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout.count(": OK") == 2
    for args in (("info", "-l", *lmz), ("decompress", "-l", *lmz), ("compress", "-l", *lmz)):
        out = run(*args).stdout.splitlines()
        assert len(out) == 4 and "(totals)" in out[-1]  # heading, two files, totals
        sizes = [int(line.split()[1]) for line in out[1:3]]
        assert sizes == [len(TEXT), len(TEXT) - 100]
        assert int(out[-1].split()[1]) == sum(sizes)


def test_quiet_silences_the_summary(run, three):
    result = run("compress", three[0], three[1], "-q")
    assert result.exit_code == 0 and result.stderr == ""


def test_d_flag_takes_the_decoder_options(run, src, tmp_path, golden_model_dir, tiny_model_dir):
    run("compress", src)
    lmz = tmp_path / "note.txt.lmz"
    unnamed = CliRunner().invoke(main, ["compress", "-d", "-c", str(lmz)])
    assert unnamed.exit_code == ModelError.exit_code and "-m/--model" in unnamed.stderr  # the file names a path
    out = CliRunner().invoke(main, ["compress", "-d", "-c", str(lmz), "-m", str(tiny_model_dir), "--batch-size", "1"])
    assert out.exit_code == 0 and out.stdout_bytes == TEXT
    wrong = CliRunner().invoke(main, ["compress", "-d", "-c", str(lmz), "-m", str(golden_model_dir)])
    assert wrong.exit_code == ModelError.exit_code  # -m was used, not dropped: it names another model
    assert "fingerprint" in wrong.stderr


def test_usage_errors_exit_2(run, three, tmp_path):
    assert run("compress", three[0], three[1], "-o", tmp_path / "x.lmz").exit_code == 2
    assert run("compress", "-d", "-t", three[0]).exit_code == 2
    assert not (tmp_path / "x.lmz").exists()


def test_concatenated_files_decode_as_their_concatenation(run, three, tmp_path):
    packed = run("compress", "-c", three[0], three[1])
    assert packed.exit_code == 0
    both = tmp_path / "both.lmz"
    both.write_bytes(packed.stdout_bytes)
    assert run("decompress", "-c", both).stdout_bytes == TEXT + TEXT[100:]
    assert "members      2" in run("info", both).stdout
    extra = tmp_path / "extra.lmz"
    extra.write_bytes(packed.stdout_bytes + b"\0garbage")
    result = run("decompress", "-c", extra)  # a stream: what passed its checksums is out, as with zstd
    assert result.exit_code == ChecksumError.exit_code and result.stdout_bytes == TEXT + TEXT[100:]
    assert "unexpected bytes" in result.stderr
    result = run("decompress", extra, "-o", tmp_path / "extra")  # a file: nothing, not a partial one
    assert result.exit_code == ChecksumError.exit_code and not (tmp_path / "extra").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _rewritten(blob: bytes, edit) -> bytes:
    """``blob`` with its header edited by ``edit`` and every checksum made sound again."""
    archive = container.parse(blob)
    edit(archive.header)
    return archive.to_bytes()


def test_every_exit_code(run, src, tmp_path):
    """Each code of FORMAT.md's table, from the CLI: 1 input, 2 usage, 3 exists, 4 not lmzip,
    5 truncated, 6 checksum, 7 model, 8 cannot run the file's engine."""
    run("compress", src)
    blob = (tmp_path / "note.txt.lmz").read_bytes()
    cases = {
        InputError.exit_code: ("decompress", "-c", tmp_path / "absent.lmz"),
        OutputExistsError.exit_code: ("compress", src),
        NotLmzipError.exit_code: b"PK\x03\x04 a zip file",
        TruncatedError.exit_code: blob[: len(blob) // 2],
        ChecksumError.exit_code: blob[:-1] + bytes([blob[-1] ^ 0x10]),
        ModelError.exit_code: _rewritten(blob, lambda h: h["model"].update(fingerprint="0" * 16)),
        ReplayError.exit_code: _rewritten(blob, lambda h: h["coding"].update(engine="int/99")),
    }
    assert sorted(cases) == sorted(EXIT_CODES)
    for code, case in cases.items():
        if isinstance(case, bytes):
            path = tmp_path / f"case{code}.lmz"
            path.write_bytes(case)
            case = ("decompress", "-c", path)
        result = run(*case)
        assert result.exit_code == code, (code, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("lmzip: ")  # one line
    assert run("compress", "--no-such-option", src).exit_code == 2


def test_best_sets_the_long_context_where_not_given(tiny_model_dir, src, tmp_path):
    runner = CliRunner()
    for extra, context in (([], codec.BEST["context"]), (["--context", "64"], 64)):
        out = tmp_path / f"best-{context}.lmz"
        result = runner.invoke(main, ["compress", str(src), "-m", str(tiny_model_dir), "--best", "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert container.parse(out.read_bytes()).header["coding"]["context"] == context
        back = runner.invoke(main, ["decompress", str(out), "-m", str(tiny_model_dir), "-c"])
        assert back.stdout_bytes == TEXT
