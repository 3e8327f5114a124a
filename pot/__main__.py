"""``python -m pot`` is the ``pot`` command."""

from pot import cli

cli.main()
