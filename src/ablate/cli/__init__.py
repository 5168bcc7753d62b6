"""The command line: argument parsing (`main`), the commands' handlers, exit codes (`ablate.errors`)."""

from __future__ import annotations

from ablate.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
