"""Whether the MLflow tracking store answers, asked once with a short timeout before any work starts.

MLflow's own client retries an unreachable server for minutes (urllib3 backoff over several
attempts) and then raises a chain of tracebacks; a study that started before finding that out
would leave an empty study behind. One probe, with a timeout of seconds, answers first:
`/health` for a server (it needs no credentials), a connection for a database store. Local
stores (`sqlite:`, `file:`, a path) need no probe: the project folder check covers them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from ablate.errors import AblateError
from ablate.redaction import redact, scrub

DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql")


class TrackingUnavailableError(AblateError):
    """The MLflow tracking server or database did not answer in time; the message says what to check."""


def require_tracking(uri: str, *, seconds: float, setting: str = "--tracking-uri or $MLFLOW_TRACKING_URI") -> None:
    """Refuse, in one line and within about `seconds`, a tracking URI whose server or database does not answer.

    Raises:
        TrackingUnavailableError: naming the URI (credentials masked), the reason and what to check.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    try:
        if scheme in ("http", "https"):
            _probe_server(parts.scheme, parts.hostname or "", parts.port, parts.path, seconds)
        elif scheme.split("+")[0] in DATABASE_SCHEMES:
            _probe_database(uri, seconds)
    except TrackingUnavailableError:
        raise
    except Exception as error:  # noqa: BLE001 - refused, timed out, unknown host, bad driver: one line each
        reason = str(getattr(error, "reason", "") or error).strip().splitlines()
        raise TrackingUnavailableError(
            f"cannot reach the MLflow tracking store {redact(uri)} (waited {seconds:.0f}s): "
            f"{scrub(reason[0] if reason else type(error).__name__)[:300]}. Check that it runs and the URI ({setting}); "
            "ABLATE_CONNECT_SECONDS waits longer"
        ) from None


def _probe_server(scheme: str, host: str, port: int | None, path: str, seconds: float) -> None:
    """GET `/health` with no credentials (the URL is rebuilt without userinfo, query or fragment)."""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port else ""
    url = urlunsplit((scheme, netloc, path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=seconds) as response:  # http(s) only, checked above
            response.read(64)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 404:
            raise TrackingUnavailableError(
                f"the MLflow tracking server {redact(urlunsplit((scheme, netloc, path, '', '')))} answered "
                f"HTTP {error.code} to /health: is it an MLflow server, and is it healthy?"
            ) from None
    except TimeoutError as error:
        raise OSError(f"no answer within {seconds:.0f}s") from error


def _probe_database(uri: str, seconds: float) -> None:
    """Open and close one connection with a connect timeout (PostgreSQL and MySQL drivers take one)."""
    import sqlalchemy  # what MLflow's database store uses too

    from ablate.project import database_url

    url = database_url(uri)
    timeout = max(1, round(seconds))
    args = {"connect_timeout": timeout} if url.split("+")[0].split(":")[0] in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
