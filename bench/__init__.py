"""shmconf's benchmark harness: ``python -m bench`` (full) or ``python -m bench --quick``.

Every measure runs shmconf side by side with what users pick instead (see
``bench.alternatives``) in the same run, and ``bench.report`` writes the
tables and plots to ``docs/bench.md`` and ``docs/img/``. ``python -m
bench.soak --minutes 10`` is the long-running leak check.
"""
