"""gunicorn config of the first-request measure: workers attach to a publisher elsewhere.

The name and whether idle adoption is on come from the environment
(``SHMCONF_BENCH_NAME``, ``SHMCONF_BENCH_IDLE``); the bench publishes itself.
"""

from __future__ import annotations

import os

from shmconf.integrations.gunicorn import ShmconfHooks

hooks = ShmconfHooks(os.environ["SHMCONF_BENCH_NAME"],
                     idle_adoption=os.environ.get("SHMCONF_BENCH_IDLE") == "1")
post_fork, worker_exit = hooks.post_fork, hooks.worker_exit
