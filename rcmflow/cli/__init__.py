"""The `rcmflow` command and what only it uses (dev stack, demo, operator views)."""

from rcmflow.cli.main import app, main

__all__ = ["app", "main"]
