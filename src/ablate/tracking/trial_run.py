"""One trial's nested MLflow run, written in the background so no MLflow round trip sits on the training thread.

A trial's logging calls queue their data and return at once, and a background thread per run
writes them (see `TrialRun`). A write that failed for good is raised by the run's next call,
`flush()` or `finish()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ablate.redaction import scrub
from ablate.spec.levels import format_level
from ablate.tracking.retry import retry_tracking

log = logging.getLogger(__name__)
SYNC_ENV = "ABLATE_TRACKING_SYNC"  # 1: trial runs write before each call returns (no background writer)
MAX_BATCH = 1000  # entries per log_batch call
RunOutcome = Literal["complete", "failed", "pruned", "interrupted"]  # how a trial run ends (not Optuna's TrialState)
MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "pruned": "FINISHED", "interrupted": "KILLED"}
MAX_TAG = 5000


class TrialRun:
    """One trial's nested MLflow run.

    With `deferred=True` (the trial runs that `Tracker.start_trial` opens), the logging calls only
    queue their data and return at once; one background thread per run writes it, consecutive
    metrics, params and tags as one `log_batch`, each call retried like any other. `flush()` waits
    until everything queued so far is written, and `finish()` drains the queue before it ends the
    run, so the run never ends before its data is in the store. A write that fails for good is not
    lost silently: the next call, `flush()` or `finish()` raises its error in the caller's thread.
    Without `deferred` (and always with $ABLATE_TRACKING_SYNC=1) every call writes before returning.
    """

    def __init__(self, client: MlflowClient, run_id: str, *, deferred: bool = False) -> None:
        self.client = client
        self.run_id = run_id
        sync = os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes")
        self._writer: _Writer | None = _Writer(client, run_id) if deferred and not sync else None

    def __repr__(self) -> str:
        return f"TrialRun(run_id={self.run_id!r}, deferred={self._writer is not None})"

    def log_params(self, params: dict[str, Any]) -> None:
        """Params under their dotted names."""
        self._batch(params=[Param(name, format_level(value)) for name, value in sorted(params.items())], what="log params")

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """All metrics of one epoch, with `step=epoch` and the time of this call."""
        timestamp = _now_ms()
        batch = [Metric(name, float(value), timestamp, step) for name, value in metrics.items()]
        self._batch(metrics=batch, what=f"log metrics of step {step}")

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """A uint8 image as a PNG artifact (encoded and written in the background when deferred)."""
        image = np.array(image, copy=True)  # the caller may reuse its array
        self._do(lambda: self.client.log_image(self.run_id, image, artifact_file=artifact_file), what=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact, e.g. the model summary."""
        self._do(lambda: self.client.log_text(self.run_id, text, artifact_file), what=artifact_file)

    def log_file(self, local_path: str, artifact_path: str | None = None) -> None:
        """A file as an artifact (e.g. the trained model's `.keras` file under `model/`).

        The caller may delete the file as soon as this returns: when deferred, what is queued is a
        private copy (a hard link where the file system allows), removed once it is written.
        """
        if self._writer is None:
            retry_tracking(lambda: self.client.log_artifact(self.run_id, local_path, artifact_path), what=local_path)
            return
        folder = tempfile.mkdtemp(prefix="ablate-artifact-")
        copy = os.path.join(folder, os.path.basename(local_path))
        try:
            os.link(local_path, copy)
        except OSError:
            shutil.copy2(local_path, copy)
        self._writer.put(
            _Call(
                lambda: self.client.log_artifact(self.run_id, copy, artifact_path),
                local_path,
                cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
            )
        )

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags, values cut to MLflow's limit."""
        self._batch(tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()], what="set tags")

    def flush(self) -> None:
        """Wait until everything logged so far is written; raise the error of a write that failed."""
        if self._writer is not None:
            self._writer.flush()

    def finish(self, state: RunOutcome, *, error: BaseException | None = None, epoch: int | None = None) -> None:
        """End the run with the status that matches the trial's state, recording why it ended.

        Everything queued is written first. If a queued write failed and its error was not raised
        yet: a complete or pruned run ends FAILED with that error as its reason, and the error is
        raised (its data is incomplete); a run that ends failed or interrupted anyway keeps its own
        reason, gets the write's error as tag `ablate.tracking_error`, and nothing is raised, so an
        interrupt is never masked.
        """
        lost = self._close()
        tags: dict[str, Any] = {"ablate.state": state}
        status = MLFLOW_STATUS[state]
        if epoch is not None:
            tags["ablate.stopped_epoch"] = epoch
        if lost is not None:
            reason = scrub(f"{type(lost).__name__}: {lost}")
            if state in ("complete", "pruned"):
                status, error, tags["ablate.state"] = "FAILED", lost, "failed"
            else:
                tags["ablate.tracking_error"] = reason
                log.warning("run %s: some of its logging was lost: %s", self.run_id, reason)
        if error is not None:
            tags["ablate.error"] = scrub(f"{type(error).__name__}: {error}")
            text = scrub("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            with contextlib.suppress(Exception):  # the tag above already holds the reason
                self.log_text(text, "error.txt")
        self.set_tags(tags)
        retry_tracking(lambda: self.client.set_terminated(self.run_id, status=status), what="end run")
        if lost is not None and state in ("complete", "pruned"):
            raise lost

    def _close(self) -> BaseException | None:
        """Drain and stop the background writer; later calls write directly. The unraised error."""
        writer, self._writer = self._writer, None
        return writer.close() if writer is not None else None

    def _batch(self, *, what: str, **entries: list[Any]) -> None:
        batch = _Batch(**entries)
        if self._writer is not None:
            self._writer.put(batch)
            return
        for part in batch.parts():
            retry_tracking(partial(part_call, self.client, self.run_id, part), what=what)

    def _do(self, call: Callable[[], Any], *, what: str) -> None:
        if self._writer is not None:
            self._writer.put(_Call(call, what))
        else:
            retry_tracking(call, what=what)


@dataclass
class _Batch:
    """Metrics, params and tags for `log_batch`; consecutive ones merge into one call."""

    metrics: list[Metric] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    tags: list[RunTag] = field(default_factory=list)

    def merge(self, other: _Batch) -> None:
        self.metrics += other.metrics
        self.params += other.params
        self.tags += other.tags

    def parts(self) -> list[_Batch]:
        """MLflow-sized calls: at most 100 params, 100 tags and 1,000 entries in all per call.

        A param logged twice with one value is sent once (MLflow refuses duplicate keys in one
        call); of a tag set twice the last value wins, as separate calls would leave it.
        """
        params = list(dict.fromkeys((p.key, p.value) for p in self.params))
        tags = list({t.key: t.value for t in self.tags}.items())
        metrics = list(self.metrics)
        parts: list[_Batch] = []
        while metrics or params or tags:
            p, params = params[:100], params[100:]
            t, tags = tags[:100], tags[100:]
            room = MAX_BATCH - len(p) - len(t)
            m, metrics = metrics[:room], metrics[room:]
            parts.append(_Batch(m, [Param(k, v) for k, v in p], [RunTag(k, v) for k, v in t]))
        return parts


@dataclass
class _Call:
    """Any other write (an artifact), run as it is; `cleanup` runs after it, written or not."""

    call: Callable[[], Any]
    what: str
    cleanup: Callable[[], None] | None = None


@dataclass
class _Marker:
    """A point in the queue: set once everything before it is written (`stop` ends the thread)."""

    done: threading.Event = field(default_factory=threading.Event)
    stop: bool = False


class _Writer:
    """One run's background writer: a daemon thread that empties a queue of writes in order."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._queue: queue.SimpleQueue[_Batch | _Call | _Marker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, item: _Batch | _Call) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"mlflow-writer-{self._run_id[:8]}", daemon=True)
            self._thread.start()
        self._queue.put(item)

    def flush(self) -> None:
        self._wait(_Marker())
        self._raise()

    def close(self) -> BaseException | None:
        """Write everything queued, stop the thread, and hand back an error not raised yet."""
        self._wait(_Marker(stop=True))
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            error, self._error = self._error, None
        return error

    def _wait(self, marker: _Marker) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self._queue.put(marker)
        marker.done.wait()

    def _raise(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:  # everything queued meanwhile goes in this round, metrics in one batch
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = _Batch()
            calls: list[_Call] = []
            markers: list[_Marker] = []
            for item in items:
                if isinstance(item, _Batch):
                    batch.merge(item)
                elif isinstance(item, _Call):
                    calls.append(item)
                else:
                    markers.append(item)
            try:
                for part in batch.parts():
                    self._write(partial(part_call, self._client, self._run_id, part), "log metrics, params and tags")
                for call in calls:
                    try:
                        self._write(call.call, call.what)
                    finally:
                        if call.cleanup is not None:
                            call.cleanup()
            except BaseException as error:  # noqa: BLE001 - a bug here must not stop the thread silently
                self._keep(error)
            finally:
                for marker in markers:
                    marker.done.set()
            if any(marker.stop for marker in markers):
                return

    def _write(self, call: Callable[[], Any], what: str) -> None:
        with self._lock:
            if self._error is not None:  # an earlier write failed for good: this trial's logging is lost
                return
        try:
            retry_tracking(call, what=what)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, never dropped
            self._keep(error)

    def _keep(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error


def part_call(client: MlflowClient, run_id: str, part: _Batch) -> None:
    """One `log_batch` call of a batch's part."""
    client.log_batch(run_id, metrics=part.metrics, params=part.params, tags=part.tags)




def _now_ms() -> int:

    return int(time.time() * 1000)
