"""Retry a call with exponential backoff while its failure is transient (a server restarting)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_transient(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    timeout: float,
    on_retry: Callable[[BaseException, float], None],
) -> T:
    """Run `call`; while it raises a transient error, wait (0.5 s doubling to 15 s) and run it again.

    Args:
        call: the call; repeating it must be harmless.
        transient: whether an error is worth waiting out.
        timeout: give up after this many seconds in all.
        on_retry: told of each retried error and the delay before the next try (for a log line).

    Raises:
        The call's own error when it is not transient, or still happens at the timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as error:
            if not transient(error) or time.monotonic() + delay > deadline:
                raise
            on_retry(error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
