"""Wiring shmconf into servers and worker pools.

One module per integration, imported on demand so that a worker loads only
what it uses (none of them imports its server at import time):

* ``shmconf.integrations.gunicorn``: ``ShmconfHooks``, gunicorn server hooks.
* ``shmconf.integrations.uvicorn``: ``lifespan``, an ASGI wrapper for
  ``uvicorn --workers N`` and other ASGI servers.
* ``shmconf.integrations.wsgi``: ``HealthMiddleware``, which counts requests
  for rollouts under WSGI servers other than gunicorn (whose hooks do it).
* ``shmconf.integrations.multiprocessing``: ``initializer`` for ``Pool`` and
  ``ProcessPoolExecutor``.
* ``shmconf.integrations.process``: ``PublisherProcess``, a publisher in a
  child process that a launcher (or gunicorn's master) owns.
* ``shmconf.integrations.debug``: a WSGI/ASGI view of the config a worker holds.
* ``shmconf.integrations.prometheus``: ``ShmconfCollector`` (needs ``prometheus_client``).
"""
