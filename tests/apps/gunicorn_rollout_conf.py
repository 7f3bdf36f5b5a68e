"""gunicorn config of the rollout tests: the name, the file and the policy come from the test."""

from __future__ import annotations

import os

import orjson

from shmconf import Rollout
from shmconf.integrations.gunicorn import ShmconfHooks

hooks = ShmconfHooks(
    os.environ["SHMCONF_TEST_NAME"],
    sources=[os.environ["SHMCONF_TEST_SOURCE"]],
    model="tests.apps.rollout_app:Release",
    debounce=0.02,
    rollout=Rollout(**orjson.loads(os.environ["SHMCONF_TEST_ROLLOUT"])),
)
on_starting, post_fork, on_exit = hooks.on_starting, hooks.post_fork, hooks.on_exit
on_reload, worker_exit = hooks.on_reload, hooks.worker_exit
pre_request, post_request = hooks.pre_request, hooks.post_request
