"""Errors raised by shmconf.

Every error derives from :class:`ShmconfError` and from the builtin it is
closest to, so ``except TimeoutError`` or ``except ValueError`` keep working
for callers that do not know shmconf. Each keeps its data in read-only
attributes, builds its message from them, and says what to do next.
``__reduce__`` rebuilds an error from those attributes, so an error raised in
a pool worker arrives intact in the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class ShmconfError(Exception):
    """Base class of every error shmconf raises."""


class InvalidNameError(ShmconfError, ValueError):
    """A config name that cannot name a segment or a file."""

    def __init__(self, name: str, reason: str) -> None:
        self._name = name
        self._reason = reason
        super().__init__(name, reason)

    @property
    def name(self) -> str:
        return self._name

    @property
    def reason(self) -> str:
        return self._reason

    def __str__(self) -> str:
        return f"invalid config name {self._name!r}: {self._reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._reason))


class SegmentError(ShmconfError, OSError):
    """A segment that exists but cannot be used: bad header, bounds, owner or mode."""

    def __init__(self, segment: str, reason: str) -> None:
        self._segment = segment
        self._reason = reason
        super().__init__(segment, reason)

    @property
    def segment(self) -> str:
        """The shared-memory name, as it appears under ``/dev/shm``."""
        return self._segment

    @property
    def reason(self) -> str:
        return self._reason

    def __str__(self) -> str:
        return f"segment {self._segment!r}: {self._reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._segment, self._reason))


class SegmentPermissionError(SegmentError, PermissionError):
    """A segment owned by another user, or readable by more users than allowed."""


class SegmentNotFoundError(ShmconfError, FileNotFoundError):
    """No segment exists for a name (nothing has published it yet)."""

    def __init__(self, name: str, segment: str) -> None:
        self._name = name
        self._segment = segment
        super().__init__(name, segment)

    @property
    def name(self) -> str:
        return self._name

    @property
    def segment(self) -> str:
        return self._segment

    def __str__(self) -> str:
        return (
            f"no config named {self._name!r} is published (no segment {self._segment!r}); "
            f"start a publisher first: shmconf publish {self._name} -c FILE"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._segment))


class AttachTimeout(ShmconfError, TimeoutError):
    """``attach()`` gave up waiting for the segment or its first generation."""

    def __init__(self, name: str, timeout: float, reason: str) -> None:
        self._name = name
        self._timeout = timeout
        self._reason = reason
        super().__init__(name, timeout, reason)

    @property
    def name(self) -> str:
        return self._name

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def reason(self) -> str:
        return self._reason

    def __str__(self) -> str:
        return (
            f"config {self._name!r} not available after {self._timeout:g}s: {self._reason}; "
            f"is `shmconf publish {self._name} ...` running as this user?"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._timeout, self._reason))


class PublisherRunningError(ShmconfError, RuntimeError):
    """Another publisher holds the writer lock for this name."""

    def __init__(self, name: str, lock_file: str, pid: int | None) -> None:
        self._name = name
        self._lock_file = lock_file
        self._pid = pid
        super().__init__(name, lock_file, pid)

    @property
    def name(self) -> str:
        return self._name

    @property
    def lock_file(self) -> str:
        return self._lock_file

    @property
    def pid(self) -> int | None:
        """The pid the segment names as its publisher, if it names one."""
        return self._pid

    def __str__(self) -> str:
        who = f"pid {self._pid}" if self._pid else "another process"
        return (
            f"config {self._name!r} is already published by {who} (lock {self._lock_file}); "
            "stop it first, or start this one with --standby to take over when it exits"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._lock_file, self._pid))


class SourceError(ShmconfError, ValueError):
    """A source that cannot be read or parsed; names the file (or key) and the line."""

    def __init__(
        self,
        source: str,
        reason: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self._source = source
        self._reason = reason
        self._line = line
        self._column = column
        super().__init__(source, reason, line, column)

    @property
    def source(self) -> str:
        """The file path or URL of the source."""
        return self._source

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def line(self) -> int | None:
        """1-based line of the error, when the format reports one."""
        return self._line

    @property
    def column(self) -> int | None:
        """1-based column of the error, when the format reports one."""
        return self._column

    @property
    def location(self) -> str:
        """``file:line:column``, as far as it is known."""
        where = self._source
        if self._line is not None:
            where += f":{self._line}"
            if self._column is not None:
                where += f":{self._column}"
        return where

    def __str__(self) -> str:
        return f"{self.location}: {self._reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._source, self._reason, self._line, self._column))


class ConfigValidationError(ShmconfError, ValueError):
    """A config that the model rejects. Each problem names its field path.

    ``problems`` holds one line per problem, already formatted as
    ``path.to.field: message (set in FILE)``, so that a message never carries
    a submitted value (which could be a secret).
    """

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self._name = name
        self._problems = tuple(problems)
        super().__init__(name, self._problems)

    @property
    def name(self) -> str:
        return self._name

    @property
    def problems(self) -> tuple[str, ...]:
        return self._problems

    def __str__(self) -> str:
        count = len(self._problems)
        head = f"config {self._name!r} is invalid ({count} problem{'s' if count != 1 else ''})"
        return head + "".join(f"\n  {p}" for p in self._problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._problems))


class ConfigTooLargeError(ShmconfError, ValueError):
    """A serialized config above the publisher's ``max_bytes``."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        self._name = name
        self._size = size
        self._limit = limit
        super().__init__(name, size, limit)

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    @property
    def limit(self) -> int:
        return self._limit

    def __str__(self) -> str:
        return (
            f"config {self._name!r} serializes to {self._size} bytes, above the limit of "
            f"{self._limit}; raise max_bytes (--max-bytes) if this size is intended"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._name, self._size, self._limit))


def validation_problems(
    exc: ValueError, origin_of: Callable[[Sequence[Any]], str | None] | None = None
) -> list[str]:
    """One line per pydantic error: field path, message, and the source that set it.

    Input values are left out: they could be secrets.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"(root): {exc}"]
    lines = []
    for error in errors(include_input=False, include_url=False):
        loc = tuple(error.get("loc", ()))
        line = f"{'.'.join(str(p) for p in loc) or '(root)'}: {error.get('msg', 'invalid')}"
        where = origin_of(loc) if origin_of is not None else None
        if where:
            line += f" (set in {where})"
        lines.append(line)
    return lines
