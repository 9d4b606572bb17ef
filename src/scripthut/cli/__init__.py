"""The `scripthut` command."""

from scripthut.cli.main import main

__all__ = ["main"]
