"""Every error shmconf raises, in one place.

Every error derives from :class:`ShmconfError` and from the builtin it is
closest to, so ``except TimeoutError`` or ``except ValueError`` keep working
for callers that do not know shmconf. An error keeps the arguments it was
made with, readable as named read-only attributes (:class:`_Arg`), builds
its message from them, and says what to do next. The base class's
``__reduce__`` rebuilds an error from those arguments, so an error raised in
a pool worker arrives intact in the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class _Arg(Generic[T]):
    """A read-only attribute that is the error's constructor argument number ``index``."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Arg[T]: ...

    @overload
    def __get__(self, obj: ShmconfError, owner: type[Any]) -> T: ...

    def __get__(self, obj: ShmconfError | None, owner: type[Any]) -> T | _Arg[T]:
        if obj is None:
            return self
        value: T = obj.arguments[self.index]
        return value

    def __set__(self, obj: ShmconfError, value: T) -> None:
        raise AttributeError(f"{type(obj).__name__}.{self.name} is read-only")


class ShmconfError(Exception):
    """Base class of every error shmconf raises.

    Subclasses pass all their constructor's arguments, in order, to this
    ``__init__`` and name them with :class:`_Arg` attributes; ``__reduce__``
    then needs nothing more. (``args`` cannot serve: an ``OSError`` keeps
    only its first two.)
    """

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)
        self.arguments: tuple[Any, ...] = arguments

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.arguments)


class InvalidNameError(ShmconfError, ValueError):
    """A config name that cannot name a segment or a file."""

    name = _Arg[str](0)
    reason = _Arg[str](1)

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)

    def __str__(self) -> str:
        return f"invalid config name {self.name!r}: {self.reason}"


class SegmentError(ShmconfError, OSError):
    """A segment that exists but cannot be used: bad header, bounds, owner or mode."""

    #: The shared-memory name, as it appears under ``/dev/shm``.
    segment = _Arg[str](0)
    reason = _Arg[str](1)

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(segment, reason)

    def __str__(self) -> str:
        return f"segment {self.segment!r}: {self.reason}"


class SegmentPermissionError(SegmentError, PermissionError):
    """A segment owned by another user, or readable by more users than allowed."""


class AnchorNotReady(ShmconfError):
    """The anchor exists but its creator has not written its header yet: wait and retry."""

    segment = _Arg[str](0)

    def __init__(self, segment: str) -> None:
        super().__init__(segment)

    def __str__(self) -> str:
        return f"segment {self.segment!r} is being created; wait for it and retry"


class SegmentNotFoundError(ShmconfError, FileNotFoundError):
    """No segment exists for a name (nothing has published it yet)."""

    name = _Arg[str](0)
    segment = _Arg[str](1)

    def __init__(self, name: str, segment: str) -> None:
        super().__init__(name, segment)

    def __str__(self) -> str:
        return (
            f"no config named {self.name!r} is published (no segment {self.segment!r}); "
            f"start a publisher first: shmconf publish {self.name} -c FILE"
        )


class AttachTimeout(ShmconfError, TimeoutError):
    """``attach()`` gave up waiting for the segment or its first generation."""

    name = _Arg[str](0)
    timeout = _Arg[float](1)
    reason = _Arg[str](2)

    def __init__(self, name: str, timeout: float, reason: str) -> None:
        super().__init__(name, timeout, reason)

    def __str__(self) -> str:
        return (
            f"config {self.name!r} not available after {self.timeout:g}s: {self.reason}; "
            f"is `shmconf publish {self.name} ...` running as this user?"
        )


class NotAttachedError(ShmconfError, RuntimeError):
    """``current()`` was called in a process where no reader is attached."""

    def __str__(self) -> str:
        return (
            "no shmconf reader is attached in this process (pid-wide); wire an integration "
            "(gunicorn post_fork, the multiprocessing initializer, the ASGI lifespan) or call "
            "shmconf.set_reader(shmconf.attach(NAME))"
        )


class PublisherRunningError(ShmconfError, RuntimeError):
    """Another publisher holds the writer lock for this name."""

    name = _Arg[str](0)
    lock_file = _Arg[str](1)
    #: The pid the segment names as its publisher, if it names one.
    pid = _Arg[int | None](2)

    def __init__(self, name: str, lock_file: str, pid: int | None) -> None:
        super().__init__(name, lock_file, pid)

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid else "another process"
        return (
            f"config {self.name!r} is already published by {who} (lock {self.lock_file}); "
            "stop it first, or start this one with --standby to take over when it exits"
        )


class PublisherStartError(ShmconfError, RuntimeError):
    """The publisher process of an integration did not publish its initial config.

    A ``RuntimeError``, so gunicorn prints the message as ``Error: ...`` and
    exits 1 when this comes out of ``on_starting``.
    """

    name = _Arg[str](0)
    reason = _Arg[str](1)

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)

    def __str__(self) -> str:
        return f"shmconf publisher for {self.name!r} did not start: {self.reason}"


class RuntimeDirError(ShmconfError, PermissionError):
    """The runtime or state directory is unsafe or cannot be created."""


class CommandError(ShmconfError):
    """A CLI command that cannot do what was asked; its message goes to stderr, exit 1."""


class SourceError(ShmconfError, ValueError):
    """A source that cannot be read or parsed; names the file (or key) and the line."""

    #: The file path or URL of the source.
    source = _Arg[str](0)
    reason = _Arg[str](1)
    #: 1-based line of the error, when the format reports one.
    line = _Arg[int | None](2)
    #: 1-based column of the error, when the format reports one.
    column = _Arg[int | None](3)

    def __init__(
        self,
        source: str,
        reason: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(source, reason, line, column)

    @property
    def location(self) -> str:
        """``file:line:column``, as far as it is known.

        A file name that is not UTF-8 is shown with ``\\udcxx`` escapes, so
        that the message can be printed or logged as it is.
        """
        where = self.source.encode("utf-8", "backslashreplace").decode("utf-8")
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class ConfigValidationError(ShmconfError, ValueError):
    """A config that the model rejects. Each problem names its field path.

    ``problems`` holds one line per problem, already formatted as
    ``path.to.field: message (set in FILE)``, so that a message never carries
    a submitted value (which could be a secret).
    """

    name = _Arg[str](0)
    problems = _Arg[tuple[str, ...]](1)
    #: The model's class name, when a model rejected it.
    model = _Arg[str | None](2)

    def __init__(self, name: str, problems: Sequence[str], model: str | None = None) -> None:
        super().__init__(name, tuple(problems), model)

    def __str__(self) -> str:
        count = len(self.problems)
        against = f" for model {self.model}" if self.model else ""
        head = (f"config {self.name!r} is invalid{against} "
                f"({count} problem{'s' if count != 1 else ''})")
        return head + "".join(f"\n  {p}" for p in self.problems)


class ConfigTooLargeError(ShmconfError, ValueError):
    """A serialized config above the publisher's ``max_bytes``."""

    name = _Arg[str](0)
    size = _Arg[int](1)
    limit = _Arg[int](2)

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(name, size, limit)

    def __str__(self) -> str:
        return (
            f"config {self.name!r} serializes to {self.size} bytes, above the limit of "
            f"{self.limit}; raise max_bytes (--max-bytes) if this size is intended"
        )


def validation_problems(
    exc: ValueError,
    origin_of: Callable[[Sequence[Any]], str | None] | None = None,
    sources: Sequence[str] = (),
) -> list[str]:
    """One line per pydantic error: field path, message, and the source to look at.

    A wrong value names the source that set it; a missing field names the
    source that set the mapping it belongs in, or else the sources, none of
    which set it. Input values are left out: they could be secrets.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"(root): {exc}"]
    lines = []
    for error in errors(include_input=False, include_url=False):
        loc = tuple(error.get("loc", ()))
        line = f"{'.'.join(str(p) for p in loc) or '(root)'}: {error.get('msg', 'invalid')}"
        if error.get("type") == "missing":
            parent = loc[:-1]
            where = origin_of(parent) if origin_of is not None and parent else None
            if where:
                line += f" (expected in {where}, which sets {'.'.join(map(str, parent))})"
            elif sources:
                line += f" (none of {', '.join(sources)} sets it)"
        else:
            where = origin_of(loc) if origin_of is not None else None
            if where:
                line += f" (set in {where})"
        lines.append(line)
    return lines
