"""Errors users see. Each says what went wrong, where (file, line, row or field) and how to fix it."""

from __future__ import annotations

from pathlib import Path


class OpenMedError(Exception):
    """Base class for every error openmed-ray raises on purpose."""


class ConfigError(OpenMedError):
    """A configuration value is missing, unknown or out of range."""


class DataFormatError(OpenMedError):
    """A data file is malformed; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ResourceError(OpenMedError):
    """Requested resources (CPUs, GPUs, workers, trials) that the Ray cluster cannot provide."""


class UnknownDatasetError(OpenMedError):
    """A dataset name that is not in the registry."""


class DatasetUnavailableError(OpenMedError):
    """A registered dataset whose files are not present on this machine."""


def root_cause(error: BaseException) -> str:
    """`Type: message` of the innermost cause, through Ray's task-error wrappers, so a
    failure deep in a Ray task reads as what actually went wrong."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}".rstrip(": ")
