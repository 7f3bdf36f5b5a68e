"""gunicorn config of the load tests; the name and the file come from the test."""

from __future__ import annotations

import os

from shmconf.integrations.gunicorn import ShmconfHooks

hooks = ShmconfHooks(
    os.environ["SHMCONF_TEST_NAME"],
    sources=[os.environ["SHMCONF_TEST_SOURCE"]],
    model="tests.apps.models:Seq",
    debounce=0.02,
)
on_starting, post_fork, on_exit = hooks.on_starting, hooks.post_fork, hooks.on_exit
on_reload, worker_exit = hooks.on_reload, hooks.worker_exit
