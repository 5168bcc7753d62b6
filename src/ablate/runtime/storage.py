"""The Optuna storage as a shared service: reconnecting engine, retried calls, and trial heartbeats.

Optuna's RDB storage is the distributed engine: every worker talks to the same database, and the
database's row locks make popping an enqueued trial atomic. This module makes that storage survive
what shared services do: a PostgreSQL restart (connections dropped under a worker), a busy SQLite
file (local workers), and a worker that dies (its trial stops heartbeating and is failed as stale).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy.exc as sa
from optuna.storages import RDBStorage
from sqlalchemy import event

from ablate.backoff import retry_transient
from ablate.errors import AblateError
from ablate.project import STORAGE_ENV as STORAGE_URL_ENV
from ablate.project import database_url
from ablate.redaction import redact, scrub

if TYPE_CHECKING:
    from typing_extensions import Self  # a type only: Python 3.10 has no typing.Self


def heartbeat_seconds() -> int:
    """Seconds between heartbeats of a running trial: $ABLATE_HEARTBEAT or 15."""

    return _env_seconds("ABLATE_HEARTBEAT", HEARTBEAT_SECONDS)


def stale_grace() -> int:
    """Seconds without a heartbeat before a trial is stale: $ABLATE_GRACE or 60 (same for all workers)."""

    return _env_seconds("ABLATE_GRACE", GRACE_SECONDS)


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise AblateError(f"${name} must be a whole number of seconds; received {text!r}") from None
    if value < 1:
        raise AblateError(f"${name} must be at least 1 second; received {value}")
    return value


T = TypeVar("T")
log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60
RECONNECT_ENV = "ABLATE_RECONNECT_SECONDS"
RECONNECT_SECONDS = 600.0
# The first connection fails fast: a wrong URL or a server that is down says so in seconds. The long
# reconnect budget above is for a storage that went away under a running study.
CONNECT_ENV = "ABLATE_CONNECT_SECONDS"
CONNECT_SECONDS = 10.0
StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class StorageUnavailableError(AblateError):
    """The storage stayed unreachable for longer than the reconnect timeout."""


class StorageRefusedError(StorageUnavailableError):
    """The storage's URL cannot work: a missing database or driver, refused credentials (bad input: exit 2)."""

    exit_status = 2


def open_storage(
    url: str,
    *,
    heartbeat: int | None = HEARTBEAT_SECONDS,
    grace: int | None = GRACE_SECONDS,
    on_stale: StaleCallback | None = None,
) -> RDBStorage:
    """An RDB storage whose connections are checked before use, with heartbeats on.

    Args:
        url: a SQLAlchemy URL (`postgresql+psycopg2://user@host/db`, `sqlite:///file.db`).
        heartbeat: seconds between a running trial's heartbeats (None: no heartbeat).
        grace: seconds without a heartbeat after which a running trial is stale; every worker of
            a study must use the same value, since any of them may judge another's trial.
        on_stale: called once (by the worker that failed it) for each stale trial.
    """
    if (heartbeat is not None and heartbeat < 1) or (grace is not None and grace < 1):
        raise AblateError(f"heartbeat and grace must be whole seconds >= 1; received heartbeat={heartbeat}, grace={grace}")
    if heartbeat is not None and grace is not None and grace <= heartbeat:
        raise AblateError(f"grace ({grace}s) must be longer than the heartbeat interval ({heartbeat}s)")
    # pool_pre_ping: a connection that PostgreSQL dropped (restart, pg_terminate_backend, an idle
    # timeout) is replaced at checkout instead of failing the next statement.
    engine: dict[str, Any] = {"pool_pre_ping": True}
    url = database_url(url)  # a plain postgresql:// gets the driver that is installed
    sqlite = url.startswith("sqlite")
    if sqlite:
        # Local workers share one file: wait for its lock rather than failing at once. The driver
        # is told not to manage transactions; `_serialize_sqlite` begins them itself.
        engine["connect_args"] = {"timeout": 60, "isolation_level": None}
    limit = env_seconds(CONNECT_ENV, CONNECT_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = retry(
                lambda: _created_once(
                    lambda: RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=heartbeat,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=on_stale,
                    )
                ),
                what="connect to the Optuna storage",
                timeout=limit,
            )
    except AblateError as error:
        cause = error.__cause__ or error
        raise StorageUnavailableError(
            f"cannot reach the Optuna storage {redact(url)} (tried for {limit:.0f}s): {scrub(_first_line(cause))}. "
            f"Check that its server runs and the URL (--storage or ${STORAGE_URL_ENV}); ${CONNECT_ENV} waits longer."
        ) from None
    except Exception as error:  # noqa: BLE001 - a bad URL, a missing driver, refused credentials: one line, not a traceback
        raise StorageRefusedError(
            f"cannot open the Optuna storage {redact(url)}: {scrub(_first_line(error))}. "
            f"Check the URL (--storage or ${STORAGE_URL_ENV}) and that its database driver is installed."
        ) from None
    if sqlite:
        _serialize_sqlite(storage)
    return storage


def _created_once(create: Callable[[], RDBStorage], attempts: int = 5) -> RDBStorage:
    """`create()`, again when another process was creating the same new database's tables at that moment.

    Optuna creates a new storage's tables and stamps its schema version on first open; two
    processes opening one new database together (two `ablate run`s on a fresh project, a test that
    polls the file while the run starts) both try, and the later one fails on the version row
    (`UNIQUE constraint failed: alembic_version.version_num`) or a table that now exists. The
    database is then complete: opening it again succeeds.
    """
    for attempt in range(attempts):
        try:
            return create()
        except (sa.IntegrityError, sa.OperationalError) as error:
            text = str(error)
            racing = "alembic_version" in text or "already exists" in text
            if not racing or attempt == attempts - 1:
                raise
            log.debug("the storage's tables were being created by another process; opening it again")
            threading.Event().wait(0.2 * (attempt + 1))
    raise AssertionError("not reached")  # the loop returns or raises


def _serialize_sqlite(storage: RDBStorage) -> None:
    """Make each of the storage's transactions on SQLite take the write lock first (BEGIN IMMEDIATE).

    Optuna's read-then-update steps (popping a WAITING trial: read its state, set RUNNING) rely on
    `SELECT ... FOR UPDATE`, which SQLite ignores, and Python's sqlite3 driver only opens a
    transaction at the first write, so the read ran outside it: two local workers could both read
    WAITING and both pop the same trial (measured: 4 processes popping 200 trials popped ~20 twice).
    With the write lock taken at BEGIN, the read and the update are one serialized transaction;
    other connections wait for the lock (`timeout` above). SQLAlchemy's documented recipe for
    pysqlite: https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    """
    @event.listens_for(storage.engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# What a database server says when waiting will not help: the database or the user does not exist,
# the password or the host is refused (PostgreSQL's and MySQL's wording).
REFUSED_FOR_GOOD = (
    "does not exist", "password authentication failed", "no pg_hba.conf entry", "Unknown database", "Access denied",
)


def refused_for_good(error: BaseException) -> bool:
    """Whether a connection error is one that no retry mends (a missing database, refused credentials)."""
    text = str(error)
    return any(marker in text for marker in REFUSED_FOR_GOOD)


def is_transient(error: BaseException) -> bool:
    """Whether an error is the database being unreachable or busy, so the call may be repeated.

    Optuna wraps SQLAlchemy errors raised during a commit in `StorageInternalError`; the cause
    tells a dropped connection (retry) from invalid data (do not).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.OperationalError) and refused_for_good(current):
            return False
        if isinstance(current, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def retry(call: Callable[[], T], *, what: str, timeout: float | None = None) -> T:
    """Run a storage call, repeating it with backoff while the database is unreachable.

    Args:
        call: the call; it must be safe to repeat (see the callers for the ones that are not).
        what: what the call does, for the log line.
        timeout: give up after this many seconds (default: $ABLATE_RECONNECT_SECONDS or 600).

    Raises:
        StorageUnavailableError: still unreachable at the timeout.
    """
    limit = timeout if timeout is not None else env_seconds(RECONNECT_ENV, RECONNECT_SECONDS)

    def warn(error: BaseException, delay: float) -> None:
        # The driver's message names host and port only, never the password.
        log.warning("storage unreachable (%s), retrying in %.1fs: %s", what, delay, _first_line(error))

    try:
        return retry_transient(call, transient=is_transient, timeout=limit, on_retry=warn)
    except Exception as error:
        if not is_transient(error):
            raise
        raise StorageUnavailableError(
            f"the Optuna storage stayed unreachable for {limit:.0f}s ({what}): {type(error).__name__}"
        ) from error


def env_seconds(name: str, default: float) -> float:
    """A number of seconds from the environment variable `name` (unset or blank: `default`).

    Raises:
        AblateError: the variable is set to something that is not a positive number (saying which).
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise AblateError(f"${name} must be a number of seconds, e.g. {default:g}; received {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise AblateError(f"${name} must be a positive number of seconds; received {text!r}")
    return value


class Heartbeat:
    """Record a running trial's heartbeat every interval from a thread, until stopped.

    Unlike Optuna's own thread (used by `Study.optimize`, which ask-and-tell loops do not get), a
    failed beat does not end the thread: while PostgreSQL restarts the beats fail and resume, so
    a live trial is only judged stale if the outage outlasts the grace period.
    """

    def __init__(self, storage: RDBStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> Self:
        if self._storage.heartbeat_interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        interval = self._storage.heartbeat_interval or HEARTBEAT_SECONDS
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
                wait = interval
            except Exception as error:  # noqa: BLE001 - keep beating; the next one may get through
                log.warning("heartbeat of trial id %d failed: %s", self._trial_id, _first_line(error))
                wait = min(interval, 2)
            self._stop.wait(wait)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def reach_tracking(uri: str) -> None:
    """Refuse a tracking store that does not answer within $ABLATE_CONNECT_SECONDS (default 10), before any work."""
    from ablate.tracking.reachability import require_tracking

    require_tracking(uri, seconds=env_seconds(CONNECT_ENV, CONNECT_SECONDS))
