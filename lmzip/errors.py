"""Every failure lmzip reports, each with the exit code the CLI returns for it.

The codes are part of the interface (README, ``lmzip --help``): scripts can tell a damaged file
from a missing model without parsing messages.
"""

from __future__ import annotations


class LmzipError(Exception):
    """Base class; ``exit_code`` is what the command line exits with."""

    exit_code = 1


class InputError(LmzipError):
    """The input is missing or unreadable."""

    exit_code = 1


class OutputExistsError(LmzipError):
    """The output file exists and ``-f`` was not given."""

    exit_code = 3


class NotLmzipError(LmzipError):
    """The data does not start with the lmzip magic, or has a version this build cannot read."""

    exit_code = 4


class TruncatedError(LmzipError):
    """The file ends before the length its header and chunk table promise."""

    exit_code = 5


class ChecksumError(LmzipError):
    """A header, table or chunk checksum does not match: the file is damaged."""

    exit_code = 6


class ModelError(LmzipError):
    """The model named cannot be loaded here, or is not the model the file was made with."""

    exit_code = 7


class ReplayError(LmzipError):
    """This environment cannot replay the encoder's computation (another device class, CPU kernel set...)."""

    exit_code = 8


EXIT_CODES = {cls.__name__: cls.exit_code for cls in (
    InputError, OutputExistsError, NotLmzipError, TruncatedError, ChecksumError, ModelError, ReplayError,
)}
