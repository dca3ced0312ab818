"""Errors that reach the user. Each one says what went wrong, where, and what to do about it."""

from __future__ import annotations


class MedbenchError(Exception):
    """Base class: the CLI prints these without a traceback and exits with ``exit_code``."""

    exit_code = 2


class UsageError(MedbenchError):
    """Bad command-line input: an unknown task or model name, a malformed option."""


class DataError(MedbenchError):
    """A dataset cannot be used at all (missing, wholly unreadable). Stops the run with exit code 2."""


class SampleError(MedbenchError):
    """One sample cannot be used (missing/corrupt image, empty answer, malformed row).

    The runner never lets this stop a run: the sample is counted as skipped, with this message as the reason.
    """

    def __init__(self, message: str, *, sample_id: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.sample_id = sample_id
        self.where = where
