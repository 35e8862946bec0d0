"""The ``lmzip`` command line, shaped after gzip and zstd."""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import click

os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's own progress bars; ours is on stderr

from . import chunking, codec, container, models
from .errors import EXIT_CODES, InputError, LmzipError, OutputExistsError

SUFFIX = ".lmz"
EXIT_HELP = "Exit codes: " + ", ".join(
    f"{code} {what}" for code, what in sorted({0: "success", 2: "usage error", **EXIT_CODES}.items())
) + "; with many files, the highest of their codes."


def _target(src: str, output: str | None, to_stdout: bool, compressing: bool) -> str:
    """Where the result goes: '-' for stdout, else a path."""
    if to_stdout or (output is None and src == "-"):
        return "-"
    if output:
        return output
    if compressing:
        return src + SUFFIX
    if not src.endswith(SUFFIX):
        raise InputError(f"{src}: unknown suffix, expected {SUFFIX} (name the output with -o)")
    return src[: -len(SUFFIX)]


def _check_free(dest: str, force: bool) -> None:
    if dest != "-" and os.path.exists(dest) and not force:
        raise OutputExistsError(f"{dest} already exists; use -f to overwrite")


@contextlib.contextmanager
def _input(path: str) -> Iterator[BinaryIO]:
    """The input file, opened for streaming ('-': stdin); a missing or unreadable one is an InputError."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    with f:
        yield f


def _read(path: str) -> bytes:
    with _input(path) as f:
        return f.read()


@contextlib.contextmanager
def _output(dest: str, force: bool) -> Iterator[BinaryIO]:
    """Where a result is written: stdout, or a temporary file beside ``dest`` renamed into place
    once it is complete, so no partial file is ever left."""
    if dest == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    _check_free(dest, force)
    with codec.atomic_output(dest) as f:
        yield f


def _write(dest: str, data: bytes, force: bool) -> None:
    with _output(dest, force) as out:
        out.write(data)


class _Counted:
    """A stream that counts the bytes read through it (stdin has no size to ask)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.count = stream, 0

    def read(self, n: int = -1) -> bytes:
        out = self.stream.read(n)
        self.count += len(out)
        return out


class _Progress:
    """A progress bar on stderr over tokens, shown only on a terminal."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.enabled, self.bar = label, not quiet and sys.stderr.isatty(), None

    def __call__(self, advance: int, total: int) -> None:
        """``total``: the tokens known so far; it grows as a stream's frames arrive."""
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.length = max(self.bar.length, total)
        self.bar.update(advance)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _run(fn):
    """Turn lmzip errors into one line on stderr and their exit code."""
    try:
        fn()
    except LmzipError as exc:
        click.echo(f"lmzip: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("lmzip: interrupted", err=True)
        sys.exit(130)


def run() -> None:
    """The ``lmzip`` command: ``main``, then an exit that skips the interpreter's teardown. With
    torch and numba loaded, the teardown took about 0.5 s of the 3.8 s that a 200-byte file took
    (Ice Lake Xeon); when ``main`` returns, every output is closed and renamed into place, and
    only the standard streams are left to flush. The exit handlers still run (Ray's shutdown)."""
    code = 0
    try:
        main()
    except SystemExit as exc:  # click's standalone mode ends here, with an int
        code = exc.code or 0
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@click.version_option(package_name="lmzip")
def main() -> None:
    """Lossless compression with a language model and a range coder.

    \b
      lmzip compress book.txt            # writes book.txt.lmz, keeps book.txt
      lmzip decompress book.txt.lmz      # writes book.txt back, byte for byte
      lmzip compress a.txt b.txt         # many files: a.txt.lmz, b.txt.lmz
      lmzip compress -c - < in > out.lmz # stdin to stdout
      lmzip verify *.lmz                 # decode in memory, check every checksum (-t)
      lmzip info -l *.lmz                # sizes and bits per byte, one line a file
      lmzip models                       # bundled models and whether installed
    """


def _stats_lines(s: codec.Stats, paper_bits: float | None) -> list[str]:
    lines = [
        f"{s.input_bytes} bytes in, {s.output_bytes} out (ratio {s.input_bytes / max(s.output_bytes, 1):.3f}); "
        f"{s.tokens} tokens in {s.lm_chunks} text chunks, {s.fallback_chunks} fallback chunks; "
        f"{s.tokens / max(s.seconds, 1e-9):.1f} tokens/s, {s.input_bytes / max(s.seconds, 1e-9):.0f} bytes/s",
        f"{'stage':28} {'bits':>12} {'per byte':>9} {'per char':>9}  step from the line above",
    ]
    for label, bits, why in s.breakdown(paper_bits):
        lines.append(f"{label:28} {bits:12.0f} {bits / max(s.input_bytes, 1):9.4f} "
                     f"{bits / max(s.characters, 1):9.4f}  {why}")
    return lines


def _options(*options):
    """A decorator applying ``options`` in order, for option sets that several commands share."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


_DTYPE = click.option(
    "--dtype", type=click.Choice(["auto", *models.DTYPES]), default="auto", show_default=True,
    help="The float forward pass's dtype; auto is bfloat16 on CUDA, float32 on CPU. int8 (CPU only) runs "
         "the transformer blocks' linear layers in int8 (torch's dynamic quantisation).")


_coding_options = _options(
    click.option("--batch-size", type=click.IntRange(1), default=codec.DEFAULT_BATCH_SIZE, show_default=True,
                 help="Rows coded in parallel, one text chunk each: more rows share each pass over the "
                      "weights, and the KV cache grows with them."),
    click.option("--chunk-tokens", type=click.IntRange(1),
                 help="Tokens a text chunk [default: as long as filling one batch allows, at least "
                      f"{chunking.MIN_CHUNK_TOKENS}]. Each chunk starts with no context: longer chunks "
                      "compress better, shorter ones fill more rows."),
    click.option("--context", type=click.IntRange(codec.MIN_CONTEXT, codec.MAX_CONTEXT), default=codec.DEFAULT_CONTEXT, show_default=True,
                 help="KV-cache slots a row: every token is predicted from the last 7/8 x context to "
                      "context tokens of its chunk. Memory grows with batch size x context."),
    click.option("--mixer", type=click.Choice(["on", "off"]),
                 default="on", show_default=True,
                 help="The online mixer (docs/FORMAT.md, mix/3): a bias for each token learned from the chunk, "
                      "and match and order-2 models of its own tokens, correct the model's tables."),
)
"""The options that shape the coding, shared by ``compress`` and ``bench``."""


def _mix(mixer: str) -> bool:
    return mixer == "on"


def _each(files: tuple[str, ...], action, verb: str, quiet: bool) -> None:
    """Run ``action(file) -> (bytes in, bytes out)`` on each file, as gzip does: a failure is one
    line on stderr naming its file, the others go on; many files end with a summary line; the
    exit code is the highest of the files' codes (0 when all succeed)."""
    worst, done, size_in, size_out = 0, 0, 0, 0
    for file in files:
        try:
            a, b = action(file)
        except LmzipError as exc:
            message = str(exc)
            click.echo(f"lmzip: {message if message.startswith(f'{file}:') else f'{file}: {message}'}", err=True)
            worst = max(worst, exc.exit_code)
            continue
        except KeyboardInterrupt:
            click.echo("lmzip: interrupted", err=True)
            sys.exit(130)
        done, size_in, size_out = done + 1, size_in + a, size_out + b
    if len(files) > 1 and not quiet:
        click.echo(f"lmzip: {done} of {len(files)} files {verb}, {size_in} bytes in, {size_out} out", err=True)
    if worst:
        sys.exit(worst)


def _explicit(ctx: click.Context, name: str):
    """An option's value where the user gave it, else None (``compress -d`` keeps only those)."""
    return ctx.params[name] if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE else None


def _one_output(files: tuple[str, ...], output: str | None) -> None:
    if output and len(files) > 1:
        raise click.UsageError("-o names one output: give one input file, or use -c")


_FILES = click.argument("files", nargs=-1, required=True, metavar="FILES...")
_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary line.")
_MODES = [
    click.option("-d", "--decompress", "decompress_", is_flag=True, help="Decompress instead (as 'lmzip decompress')."),
    click.option("-t", "--test", "test", is_flag=True, help="Test instead (as 'lmzip verify')."),
    click.option("-l", "--list", "list_", is_flag=True, help="List instead (as 'lmzip info --list')."),
]


_decoder_options = _options(
    click.option("--batch-size", type=click.IntRange(1), default=codec.DEFAULT_BATCH_SIZE, show_default=True,
                 help="Chunks decoded in parallel."),
    click.option("--threads", type=click.IntRange(1), help="CPU threads [default: torch's]."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
)
"""How the decoder lays out its own work: the file does not depend on it."""

_cluster_options = _options(
    click.option("--ray", "ray_", is_flag=True, help="Code batches of chunks on a Ray cluster ("
                 "pip install 'lmzip[cluster]'): a local one unless --ray-address names one."),
    click.option("--ray-address", help="The Ray cluster to join, as ray.init takes it (implies --ray)."),
    click.option("--workers", type=click.IntRange(1), help="Ray actors, one CPU each [default: one a CPU of the cluster]."),
)


def _cluster(ray_: bool, address: str | None, workers: int | None):
    """The cluster the options name, or None to code in this process."""
    if not (ray_ or address):
        if workers:
            raise click.UsageError("--workers needs --ray")
        return None
    from .cluster import Ray

    return Ray(address, workers)


@main.command()
@_FILES
@click.option("-m", "--model", default=models.DEFAULT_MODEL, show_default=True,
              help="Registry name, Hugging Face model directory, or .gguf file.")
@click.option("-o", "--output", help="Output path (default FILE.lmz; one input file only).")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output (many files: one after another).")
@click.option("-k", "--keep", is_flag=True, help="Keep the input (the default; for gzip habits).")
@click.option("--rm", "remove", is_flag=True, help="Delete each input once its output is written.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@_options(*_MODES)
@_coding_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads [default: torch's].")
@click.option("--best", is_flag=True,
              help="The smallest files measured (lmzip/codec.py, BEST): --context 4096 --chunk-tokens 8192 "
                   "--batch-size 6 where not given; about 0.3x the default's compress speed.")
@click.option("--stats", is_flag=True, help="Print sizes, speed, and the bits at each stage to stderr.")
@click.option("--paper-bpc", is_flag=True, help="With --stats: also the paper-method bits of the text (one more pass).")
@_cluster_options
@_QUIET
@click.pass_context
def compress(ctx, files, model, output, to_stdout, keep, remove, force, decompress_, test, list_, batch_size,
             chunk_tokens, context, mixer, device, threads, best, stats, paper_bpc, ray_, ray_address, workers,
             quiet) -> None:
    """Compress each FILE ('-' for stdin) into FILE.lmz.

    As in gzip, -d decompresses, -t tests and -l lists instead; then -m, --batch-size, --threads
    and --device apply to the decoder where given.
    """
    if decompress_ + test + list_ > 1:
        raise click.UsageError("give at most one of -d, -t and -l")
    cluster = _cluster(ray_, ray_address, workers)
    decoding = {"model": _explicit(ctx, "model"), "batch_size": batch_size, "threads": threads, "device": device,
                "cluster": cluster}
    if decompress_:
        return _decompress(files, output, to_stdout, remove, force, quiet, decoding)
    if test:
        return _verify(files, quiet, decoding)
    if list_:
        return _list(files)
    _one_output(files, output)
    if best:
        given = {name: _explicit(ctx, name) for name in codec.BEST}
        batch_size, chunk_tokens, context = (codec.BEST[n] if given[n] is None else given[n]
                                             for n in ("batch_size", "chunk_tokens", "context"))
    lz = functools.cache(lambda: codec.LMZip(model, device=device, batch_size=batch_size, chunk_tokens=chunk_tokens,
                                             context=context, threads=threads, mix=_mix(mixer), cluster=cluster))
    float_lm = functools.cache(lambda: models.load(model, device=device))  # --paper-bpc's float forward pass

    def one(file: str) -> tuple[int, int]:
        dest = _target(file, output, to_stdout, compressing=True)
        if dest == "-" and sys.stdout.isatty() and not force:
            raise LmzipError("refusing to write compressed data to a terminal (use -o, or -f to force)")
        _check_free(dest, force)
        data = _read(file) if paper_bpc else None  # the paper's method needs the whole text
        with (_input(file) if data is None else contextlib.nullcontext(io.BytesIO(data))) as src, \
                _output(dest, force) as out, _Progress(f"compressing {file}", quiet) as bar:
            s = lz().compress_stream(src, out, progress=bar)
        if stats:
            paper_bits = _paper_bits(float_lm(), data) if paper_bpc else None
            if paper_bpc and paper_bits is None:
                click.echo("lmzip: paper-method BPC: n/a (not UTF-8, or shorter than one 1901-token window)", err=True)
            for line in _stats_lines(s, paper_bits):
                click.echo(f"lmzip: {line}", err=True)
        if remove and file != "-" and dest != "-":
            os.unlink(file)
        return s.input_bytes, s.output_bytes

    _each(files, one, "compressed", quiet)


def _paper_bits(lm: models.LanguageModel, data: bytes) -> float | None:
    """Paper-method bits of ``data`` as one document; None where it is not text or too short for a window."""
    from .analysis import bpc as paper

    try:
        stream = lm.tokenizer.encode(data.decode("utf-8"))
        return paper.stream_bits(lm, stream)[0]
    except (UnicodeDecodeError, InputError):
        return None


def _decoded(file: str, out: BinaryIO | None, quiet: bool, decoding: dict, label: str) -> tuple[int, int]:
    """Decode ``file`` frame by frame into ``out`` (None: only check it); its bytes in and out."""
    with _input(file) as f, _Progress(f"{label} {file}", quiet) as bar:
        src = _Counted(f)
        size = 0
        for piece in codec.iter_decompress(src, progress=bar, **decoding):  # models are cached across files
            size += len(piece)
            if out is not None:
                out.write(piece)
        return src.count, size


def _decompress(files, output, to_stdout, remove, force, quiet, decoding: dict) -> None:
    _one_output(files, output)

    def one(file: str) -> tuple[int, int]:
        dest = _target(file, output, to_stdout, compressing=False)
        _check_free(dest, force)
        with _output(dest, force) as out:
            done = _decoded(file, out, quiet, decoding, "decompressing")
        if remove and file != "-" and dest != "-":
            os.unlink(file)
        return done

    _each(files, one, "decompressed", quiet)


def _verify(files, quiet, decoding: dict) -> None:
    def one(file: str) -> tuple[int, int]:
        done = _decoded(file, None, quiet, decoding, "verifying")
        click.echo(f"{file}: OK")
        return done

    _each(files, one, "verified", quiet)


def _list(files) -> None:
    """One line a file, as ``gzip -l``: sizes, ratio, model, name; a total line for many."""
    click.echo(f"{'compressed':>12} {'original':>12} {'bits/byte':>9}  {'model':14} name")
    total = [0, 0]

    def one(file: str) -> tuple[int, int]:
        blob = _read(file)
        archives = container.members(blob)
        size = sum(a.footer.size for a in archives)
        names = sorted({a.header["model"]["name"] for a in archives})
        click.echo(f"{len(blob):12} {size:12} {8 * len(blob) / max(size, 1):9.4f}  {','.join(names):14} {file}")
        total[0], total[1] = total[0] + len(blob), total[1] + size
        return len(blob), size

    _each(files, one, "listed", quiet=True)
    if len(files) > 1:
        click.echo(f"{total[0]:12} {total[1]:12} {8 * total[0] / max(total[1], 1):9.4f}  {'':14} (totals)")


@main.command()
@_FILES
@click.option("-o", "--output", help="Output path (default: FILE without .lmz; one input file only).")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output.")
@click.option("-k", "--keep", is_flag=True, help="Keep the input (the default).")
@click.option("--rm", "remove", is_flag=True, help="Delete each input once its output is written.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@click.option("-t", "--test", "test", is_flag=True, help="Test instead (as 'lmzip verify').")
@click.option("-l", "--list", "list_", is_flag=True, help="List instead (as 'lmzip info --list').")
@click.option("-m", "--model", help="Use this model instead of the one the file names (it must be the same model).")
@_decoder_options
@_cluster_options
@_QUIET
def decompress(files, output, to_stdout, keep, remove, force, test, list_, model, batch_size, threads, device,
               ray_, ray_address, workers, quiet) -> None:
    """Decompress each FILE.lmz ('-' for stdin), checking every checksum.

    Concatenated .lmz files decode as the concatenation of their contents, as gzip members do.
    """
    if test and list_:
        raise click.UsageError("give at most one of -t and -l")
    decoding = {"model": model, "batch_size": batch_size, "threads": threads, "device": device,
                "cluster": _cluster(ray_, ray_address, workers)}
    if test:
        return _verify(files, quiet, decoding)
    if list_:
        return _list(files)
    _decompress(files, output, to_stdout, remove, force, quiet, decoding)


@main.command()
@_FILES
@click.option("-m", "--model", help="Use this model instead of the one the file names.")
@_decoder_options
@_cluster_options
@_QUIET
def verify(files, model, batch_size, threads, device, ray_, ray_address, workers, quiet) -> None:
    """Decode each FILE.lmz in memory and check every checksum; writes nothing."""
    _verify(files, quiet, {"model": model, "batch_size": batch_size, "threads": threads, "device": device,
                           "cluster": _cluster(ray_, ray_address, workers)})


@main.command()
@_FILES
@click.option("-l", "--list", "list_", is_flag=True, help="One line a file, as gzip -l.")
@click.option("--json", "as_json", is_flag=True, help="Print each header and chunk table as JSON.")
def info(files, list_, as_json) -> None:
    """Show the model, coding parameters and sizes of each FILE.lmz (no model needed)."""
    if list_:
        return _list(files)

    def one(file: str) -> tuple[int, int]:
        blob = _read(file)
        archives = container.members(blob)
        size = sum(a.footer.size for a in archives)
        if as_json:
            click.echo(json.dumps({"file": file, "file_size": len(blob), "members": [
                {"header": a.header, "original": asdict(a.footer), "frames": len(a.frames), "chunks": [{"kind": e.kind.name, "tokens": e.tokens, "raw_size": e.raw_size,
                                                 "payload_bits": e.payload_bits, "crc32": e.crc} for e in a.entries]}
                for a in archives]}, indent=2))
            return len(blob), size
        if len(files) > 1:
            click.echo(f"file         {file}")
        for a in archives:
            h = a.header
            kinds = {k: sum(e.kind.name == k for e in a.entries) for k in ("LM", "ZSTD", "STORED")}
            click.echo("\n".join([
                f"model        {h['model']['name']} (fingerprint {h['model']['fingerprint']})",
                f"coding       {h['coding']}",
                *([f"replay       {h['replay']}"] if "replay" in h else []),
                f"original     {a.footer.size} bytes, {a.footer.characters} characters, {a.footer.algorithm} {a.footer.check}",
                f"chunks       {len(a.entries)} in {len(a.frames)} frames: " + ", ".join(f"{v} {k}" for k, v in kinds.items()),
                f"tokens       {sum(e.tokens for e in a.entries)}",
            ]))
        chars = sum(a.footer.characters for a in archives)
        click.echo("\n".join([
            *([f"members      {len(archives)} (concatenated files)"] if len(archives) > 1 else []),
            f"compressed   {len(blob)} bytes (container {sum(a.container_bytes for a in archives)})",
            f"ratio        {size / max(len(blob), 1):.3f}; {8 * len(blob) / max(size, 1):.4f} bits per byte, "
            f"{8 * len(blob) / max(chars, 1):.4f} bits per character",
        ]))
        return len(blob), size

    _each(files, one, "described", quiet=True)


@main.command("models")
def list_models() -> None:
    """List the bundled models and whether each is installed."""
    for entry in models.REGISTRY.values():
        state = "installed" if entry.installed() else f"not installed ({entry.pip_command})"
        default = " (default)" if entry.name == models.DEFAULT_MODEL else ""
        click.echo(f"{entry.name:14} {entry.description}{default}\n{'':14} {state}")
    click.echo("Also accepted: a Hugging Face model directory, or a path to a .gguf file.")


@main.command()
@click.argument("bpc_table", required=False, type=click.Path(dir_okay=False))
@click.argument("scores_table", required=False, type=click.Path(dir_okay=False))
@click.option("--paper", is_flag=True, help="Analyse the paper's own tables (shipped with lmzip).")
@click.option("--area", "areas", multiple=True, metavar="NAME=COL,COL",
              help="Group benchmark columns into an area (repeatable); BPC rows are matched on an 'area' column.")
@click.option("--exclude", multiple=True, metavar="MODEL", help="Leave a model out of the fits (repeatable).")
@click.option("--bpc-column", default="bpc", show_default=True, help="The BPC column of BPC_TABLE.")
@click.option("--predict", "predict_bpc", type=float, help="Also predict each benchmark's score at this BPC.")
@click.option("--out", "out_dir", default="lmzip-correlation", show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.md, report.json, report.csv and the PNG plots.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the scatter plots.")
def correlate(bpc_table, scores_table, paper, areas, exclude, bpc_column, predict_bpc, out_dir, plots) -> None:
    """Correlate BPC with benchmark scores: Pearson, Spearman, Kendall, fit, RMSE, bootstrap CIs.

    \b
      lmzip correlate --paper                      # reproduce Huang et al. (2024)
      lmzip correlate bpc.csv scores.csv --exclude Qwen-7b
      lmzip correlate bpc.csv scores.csv --area "Coding=HumanEval,MBPP" --predict 0.30

    BPC_TABLE has 'model' and BPC columns (the output of 'lmzip bpc' works as it is); SCORES_TABLE
    has 'model' and one column per benchmark.
    """
    from .analysis import correlate as corr
    from .analysis import report

    def go() -> None:
        if paper == bool(bpc_table or scores_table) or (not paper and not (bpc_table and scores_table)):
            raise click.UsageError("give either --paper, or BPC_TABLE and SCORES_TABLE")
        if paper:
            analysis = corr.paper_analysis()
            title = "Compression against intelligence: Huang et al. (2024), reproduced by lmzip"
        else:
            groups = {}
            for spec in areas:
                name, _, cols = spec.partition("=")
                if not cols:
                    raise click.UsageError(f"--area wants NAME=COL,COL, got {spec!r}")
                groups[name.strip()] = [c.strip() for c in cols.split(",") if c.strip()]
            analysis = corr.table_analysis(_read(bpc_table).decode(), _read(scores_table).decode(), groups,
                                           set(exclude), bpc_column)
            title = f"Compression against intelligence: {os.path.basename(bpc_table)} and {os.path.basename(scores_table)}"
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = report.to_markdown(analysis.groups, title, analysis.notes)
        if predict_bpc is not None:
            md += (f"\n## Predicted scores at BPC {predict_bpc}\n\nA BPC outside a fit's measured range is an "
                   "extrapolation, and a BPC is only comparable on the corpus the fit used.\n\n"
                   "| group | benchmark | score | 95% prediction interval | within measured BPC |\n"
                   "|---|---|---:|---|---|\n")
            for group, fits in analysis.groups.items():
                for f in fits:
                    mid, lo, hi = f.predict(predict_bpc)
                    inside = "yes" if min(f.x) <= predict_bpc <= max(f.x) else "no, extrapolated"
                    md += f"| {group} | {f.benchmark} | {100 * mid:.1f}% | [{100 * lo:.1f}%, {100 * hi:.1f}%] | {inside} |\n"
        (out / "report.md").write_text(md)
        (out / "report.json").write_text(report.to_json(analysis.groups, {"notes": analysis.notes}))
        (out / "report.csv").write_text(report.to_csv(analysis.groups))
        if plots:
            for group, fits in analysis.groups.items():
                headline = next((f for f in fits if f.benchmark.startswith("Average")), fits[-1])
                name = "".join(ch if ch.isalnum() else "-" for ch in group.lower()).strip("-")
                report.scatter(headline, out / f"{name}.png", group, analysis.corpus.get(group, "BPC"),
                               analysis.excluded.get(group))
        click.echo(md)
        click.echo(f"lmzip: report written to {out}/", err=True)

    _run(go)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("-m", "--model", "model_specs", multiple=True, default=[models.DEFAULT_MODEL], show_default=True,
              help="Model to measure; repeat it to measure several (a row for each model and file).")
@click.option("--method", type=click.Choice(["paper", "all"]), default="paper", show_default=True,
              help="paper: Huang et al.'s windows (drops the tail); all: every token after the first.")
@click.option("--window", type=click.IntRange(1), default=1900, show_default=True, help="Input tokens a window.")
@click.option("--stride", type=click.IntRange(1), default=512, show_default=True, help="Tokens between windows.")
@click.option("--area", help="Area label for every row (default: each file's folder name).")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True, help="Windows a forward pass.")
@click.option("--device", default="auto", show_default=True)
@_DTYPE
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", help="Write the table here instead of stdout.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_cluster_options
def bpc(files, model_specs, method, window, stride, area, batch_size, device, dtype, fmt, output, force, quiet,
        ray_, ray_address, workers) -> None:
    """Theoretical bits per character of FILES (text, or JSONL with 'content'), as in Huang et al. (2024).

    One row per model and file: model, corpus, area, characters, bytes, tokens, bits, bpc, bits
    per byte, method, window, stride. 'lmzip correlate' reads this table as it is. With --ray,
    the windows' forward passes run on the cluster's actors, which load each model once.
    """
    from .analysis import bpc as measure_bpc

    cluster = _cluster(ray_, ray_address, workers)

    def go() -> None:
        dest = output or "-"
        _check_free(dest, force)
        rows = []
        for spec in model_specs:
            lm = models.load(spec, device=device, dtype=dtype)
            scorer = cluster.scorer(lm) if cluster else None
            for path in files:
                with _Progress(f"bpc {os.path.basename(path)}", quiet) as bar:
                    rows.append(measure_bpc.measure(lm, path, area, window, stride, method, batch_size, bar,
                                                    scorer).as_dict())
        text = json.dumps(rows, indent=2) + "\n" if fmt == "json" else _csv(rows)
        _write(dest, text.encode(), force)

    _run(go)


@main.command("bench")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-m", "--model", default=models.DEFAULT_MODEL, show_default=True, help="lmzip's model.")
@_coding_options
@click.option("--no-lmzip", is_flag=True, help="Only the classical compressors (fast).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write every row to this CSV.")
def bench_command(paths, model, batch_size, chunk_tokens, context, mixer, no_lmzip, csv_path) -> None:
    """Compare lmzip with gzip, bzip2, xz, zstd, brotli and PPMd on your files (round trips verified).

    PATHS are files or folders (every file below them). Prints bits per byte by compressor and
    by folder.
    """
    from .analysis import benchmark

    def go() -> None:
        files = sorted({f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()})
        if not files:
            raise InputError("no files to benchmark")
        lz = None if no_lmzip else codec.LMZip(model, batch_size=batch_size, chunk_tokens=chunk_tokens,
                                               context=context, mix=_mix(mixer))
        rows = []
        for f in files:
            click.echo(f"lmzip: {f}", err=True)
            rows += benchmark.baseline_rows(f)
            if lz is not None:
                rows.append(benchmark.lmzip_row(lz, f))
        click.echo(benchmark.markdown(rows))
        if csv_path:
            _write(csv_path, _csv(rows).encode(), force=True)

    _run(go)
