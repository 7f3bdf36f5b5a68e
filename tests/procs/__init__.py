"""Scripts the tests run as real processes (``python -m tests.procs.NAME``)."""
