"""Every failure lmzip reports, each with the exit code the CLI returns for it.

The codes are part of the interface (README, ``lmzip --help``): scripts can tell a damaged file
from a missing model without parsing messages.
"""

from __future__ import annotations


class LmzipError(Exception):
    """Base class; ``exit_code`` is what the command line exits with."""

    exit_code = 1
    short = "error"


class InputError(LmzipError):
    """The input is missing or unreadable."""

    exit_code = 1
    short = "input missing or unreadable"


class OutputExistsError(LmzipError):
    """The output file exists and ``-f`` was not given."""

    exit_code = 3
    short = "output exists (use -f)"


class NotLmzipError(LmzipError):
    """The data does not start with the lmzip magic, or has a version this build cannot read."""

    exit_code = 4
    short = "not an lmzip file"


class TruncatedError(LmzipError):
    """The file ends before the length its header and chunk table promise."""

    exit_code = 5
    short = "truncated file"


class ChecksumError(LmzipError):
    """A header, table or chunk checksum does not match: the file is damaged."""

    exit_code = 6
    short = "checksum mismatch"


class ModelError(LmzipError):
    """The model named cannot be loaded here, or is not the model the file was made with."""

    exit_code = 7
    short = "model missing or different"


class ReplayError(LmzipError):
    """This lmzip cannot reproduce the encoder's computation: an engine or mixer revision it does not run."""

    exit_code = 8
    short = "cannot reproduce the encoder here"


EXIT_CODES = {cls.exit_code: cls.short for cls in (
    InputError, OutputExistsError, NotLmzipError, TruncatedError, ChecksumError, ModelError, ReplayError,
)}
