"""Errors that name the input and the fix."""

from __future__ import annotations


class CvloopError(Exception):
    """Base error: a message that says what is wrong and, when known, how to fix it.

    Args:
        message: what went wrong, naming the input (file, key, URL, service).
        fix: the command or change that mends it.
        transient: the same call may succeed later unchanged (a service down or busy); a
            task's retries are spent only on these (``tasks.retry_transient``), never on
            bad input, a refused token or a missing version.
    """

    def __init__(self, message: str, fix: str | None = None, *, transient: bool = False) -> None:
        self.message = message
        self.fix = fix
        self.transient = transient
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ConfigError(CvloopError):
    """params.yaml or an environment variable holds a value that is not allowed."""


class StorageError(CvloopError):
    """A storage key is invalid or an object cannot be read or written."""


class ServiceError(CvloopError):
    """A local service cannot start, is unhealthy, or its port is taken."""
