"""Exceptions for mistakes a user can make.

Every error a user can cause (a wrong flag, a missing file, a checkpoint we cannot handle)
is a `HeadcountError`; the CLI prints its message as one line and exits non-zero, with no
traceback. Anything else that escapes is a bug in headcount.
"""


class HeadcountError(Exception):
    """Base class: a problem with the user's input, reported as one line."""


class UnsupportedModelError(HeadcountError):
    """The checkpoint's architecture (or a feature of it) is not supported."""


class DataError(HeadcountError):
    """Missing or malformed data: files, columns, labels, empty subsets."""


class TaskError(HeadcountError):
    """Unknown task name or a task option that does not fit the task."""


class ConfigError(HeadcountError):
    """A bad option value (normalisation, max length, fraction, ...)."""

