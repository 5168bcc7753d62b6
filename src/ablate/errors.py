"""The errors a user can cause and fix: the CLI prints their message and exits non-zero, no traceback."""

from __future__ import annotations


class AblateError(Exception):
    """Base of the errors whose message tells the user what was wrong and what to do."""
