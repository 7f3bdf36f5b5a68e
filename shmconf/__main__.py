"""``python -m shmconf``: the same as the ``shmconf`` command."""

from shmconf.cli import main

main()
