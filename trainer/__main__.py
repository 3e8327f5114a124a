"""``python -m pot.trainer``: one rank of the trainer gang (see ``pot.trainer.cli``)."""

from pot.trainer import cli

cli.main()
