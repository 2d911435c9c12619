"""The `coordexp` command line. One module per command group; `main` dispatches."""

from coordexp.train.cli.main import main

__all__ = ["main"]
