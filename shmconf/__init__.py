"""shmconf: one validated config for every worker process on a host.

A :class:`Publisher` loads, validates and publishes a config into shared
memory; each worker calls :func:`attach` once and then ``reader.get()``,
which costs about as much as a dict lookup while the config is unchanged.
"""

from shmconf._current import current, current_reader, set_reader
from shmconf.errors import (
    AttachTimeout,
    ConfigTooLargeError,
    ConfigValidationError,
    InvalidNameError,
    NotAttachedError,
    PublisherRunningError,
    SegmentError,
    SegmentNotFoundError,
    SegmentPermissionError,
    ShmconfError,
    SourceError,
)
from shmconf.publisher import Publisher
from shmconf.reader import Reader, attach
from shmconf.rollout import Rollout

__version__ = "0.1.0"

__all__ = [
    "AttachTimeout",
    "ConfigTooLargeError",
    "ConfigValidationError",
    "InvalidNameError",
    "NotAttachedError",
    "Publisher",
    "PublisherRunningError",
    "Reader",
    "Rollout",
    "SegmentError",
    "SegmentNotFoundError",
    "SegmentPermissionError",
    "ShmconfError",
    "SourceError",
    "__version__",
    "attach",
    "current",
    "current_reader",
    "set_reader",
]
