"""Every call to the tracking store is retried while the store is unreachable or busy, up to a deadline.

An MLflow server restarting, or a local SQLite store locked by another worker, is waited out; past
the deadline the error is raised, so the trial fails with the reason instead of losing its metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

from ablate.backoff import retry_transient
from ablate.redaction import scrub

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRY_ENV = "ABLATE_TRACKING_RETRY_SECONDS"
RETRY_SECONDS = 600.0


# Error codes of answers that may succeed when asked again (the server restarting, overloaded).
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def retry_tracking(call: Callable[[], T], *, what: str, timeout: float | None = None) -> T:
    """Run a tracking call, repeating it with backoff while the store is unreachable or busy.

    Args:
        call: the call; repeating it must be harmless (logging the same batch twice is).
        what: what the call logs, for the warning line.
        timeout: give up after this many seconds (default: $ABLATE_TRACKING_RETRY_SECONDS or 600).
    """
    limit = timeout if timeout is not None else float(os.environ.get(RETRY_ENV, RETRY_SECONDS))

    def warn(error: BaseException, delay: float) -> None:
        first = (str(error).splitlines() or [""])[0][:300]
        log.warning("MLflow unreachable (%s), retrying in %.1fs: %s", what, delay, scrub(first))

    return retry_transient(call, transient=_transient, timeout=limit, on_retry=warn)


def _transient(error: BaseException) -> bool:
    if isinstance(error, MlflowException):
        return error.error_code in TRANSIENT_CODES or "database is locked" in str(error)
    if isinstance(error, requests.HTTPError):
        return error.response is None or error.response.status_code >= 500 or error.response.status_code == 429
    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    return "database is locked" in str(error)
