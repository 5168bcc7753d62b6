"""One trial's nested MLflow run, written in the background so no MLflow round trip sits on the training thread.

A trial's logging calls queue their data and return at once, and a background thread per run
writes them (see `TrialRun`). A write that failed for good is raised by the run's next call,
`flush()` or `finish()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ablate.redaction import scrub
from ablate.spec.levels import format_level
from ablate.tracking.retry import retry_tracking

if TYPE_CHECKING:
    from ablate.training.family import SavedModel  # a plain dataclass: only the type is needed here

log = logging.getLogger(__name__)
SYNC_ENV = "ABLATE_TRACKING_SYNC"  # 1: trial runs write before each call returns (no background writer)
MAX_BATCH = 1000  # entries per log_batch call
RunOutcome = Literal["complete", "failed", "pruned", "interrupted"]  # how a trial run ends (not Optuna's TrialState)
MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "pruned": "FINISHED", "interrupted": "KILLED"}
MAX_TAG = 5000
MODEL_FOLDER = "model"  # the run's MLflow model (runs:/RUN/model), around its model.keras
# The run's MLflow 3 logged model (models:/MODEL_ID). Not named `model`: MLflow resolves a run
# artifact path whose first part is the name of one of the run's logged models through that logged
# model (with the process's global tracking URI, which ablate never sets), so reads of `model/...`
# would stop reaching the run's own `model/` folder.
LOGGED_MODEL = "keras_model"


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
        _link_or_copy(local_path, copy)
        self._writer.put(
            _Call(
                lambda: self.client.log_artifact(self.run_id, copy, artifact_path),
                local_path,
                cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
            )
        )

    def log_model(self, saved: SavedModel) -> None:
        """The trained model as the run's MLflow model: `model/` holds `model.keras` (the file the
        caller saved, which plain Keras loads) and, beside it, what makes the folder an MLflow model
        of MLflow's Keras flavour (`MLmodel`, `requirements.txt`, `conda.yaml`, `python_env.yaml`).

        So `mlflow.pyfunc.load_model("runs:/RUN/model")` and `mlflow.keras.load_model` load it and
        `mlflow.register_model("runs:/RUN/model", NAME)` registers it, while `model/model.keras`
        stays where ablate's readers (and older runs) have it. The same folder is also MLflow 3's
        logged model of the run (`log_logged_model`): the experiment's Models tab lists it and
        `models:/MODEL_ID` loads it. In the background when deferred; the caller may delete its file
        as soon as this returns.
        """
        folder = tempfile.mkdtemp(prefix="ablate-model-")
        try:
            write_mlflow_model(saved, folder, run_id=self.run_id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        def upload() -> None:
            self.client.log_artifacts(self.run_id, folder, MODEL_FOLDER)
            self.log_logged_model(folder)

        if self._writer is None:
            try:
                retry_tracking(upload, what=f"{MODEL_FOLDER}/")
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return
        self._writer.put(_Call(upload, f"{MODEL_FOLDER}/", cleanup=partial(shutil.rmtree, folder, ignore_errors=True)))

    def log_logged_model(self, folder: str) -> str | None:
        """The MLflow model in `folder` as a logged model of this run (MLflow 3's `LoggedModel`); its id.

        Created, uploaded and finalised READY, and linked to the run as its output, so the MLflow UI
        lists it under the experiment's models and the run's outputs. A store or server that refuses
        logged models (an older server, a user without the permission) costs only this: the run is
        tagged `ablate.logged_model_error` and keeps its `model/` folder, which loads as before.
        """
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        try:
            run = retry_tracking(lambda: self.client.get_run(self.run_id), what="read the run")
            model = retry_tracking(
                lambda: self.client.create_logged_model(
                    run.info.experiment_id, name=LOGGED_MODEL, source_run_id=self.run_id, model_type="keras"
                ),
                what="create the logged model",
            )
            retry_tracking(lambda: self.client.log_model_artifacts(model.model_id, folder), what="the logged model's files")
            retry_tracking(lambda: self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY), what="finalise the logged model")
            retry_tracking(lambda: self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, 0)]), what="link the logged model")
        except Exception as error:  # noqa: BLE001 - optional: the run's model/ folder is the model either way
            log.warning("run %s: no MLflow logged model (%s); its model/ folder loads as before", self.run_id, scrub(str(error))[:300])
            with contextlib.suppress(Exception):  # the tag is a courtesy; the trial goes on without it
                self.client.set_tag(self.run_id, "ablate.logged_model_error", scrub(str(error))[:MAX_TAG])
            return None
        return str(model.model_id)

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


def write_mlflow_model(saved: SavedModel, folder: str, *, run_id: str | None = None) -> None:
    """An MLflow model of MLflow's Keras flavour in `folder`, around a link to (or copy of) `saved.path`.

    The layout is what `mlflow.keras` loads: `model.keras`, and an `MLmodel` whose `keras` flavour
    names it (`data: model`, which the flavour's loader reads as `model.keras`) and whose
    `python_function` flavour makes it a pyfunc model, with the signature of its inputs; the
    environment files pin MLflow, Keras and its backend (never ablate: the file needs none of it).

    Written here rather than by `mlflow.keras.save_model`, which saves the model itself (ablate has
    saved it already, and the same file is the run's `model/model.keras`) and checks the
    requirements against every installed distribution: 1.4 s the first time in each process, and a
    forked worker (`ablate.runtime.forks`) runs one trial per process.
    """
    import keras  # loaded already wherever a model is logged
    import mlflow
    import yaml
    from mlflow import pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    root = Path(folder)
    _link_or_copy(saved.path, str(root / "model.keras"))
    requirements = [f"mlflow=={mlflow.__version__}", *saved.requirements]
    python = platform.python_version()
    (root / "requirements.txt").write_text("\n".join(requirements) + "\n")
    build = [f"{name}=={version}" for name in ("pip", "setuptools", "wheel") if (version := _version(name))]
    python_env = {"python": python, "build_dependencies": build, "dependencies": ["-r requirements.txt"]}
    (root / "python_env.yaml").write_text(yaml.safe_dump(python_env, sort_keys=False))
    conda = {"channels": ["conda-forge"], "dependencies": [f"python={python}", "pip", {"pip": requirements}], "name": "mlflow-env"}
    (root / "conda.yaml").write_text(yaml.safe_dump(conda, sort_keys=False))

    float32 = np.dtype("float32")

    def batch(shape: tuple[int | None, ...]) -> tuple[int, ...]:
        return (-1, *(-1 if size is None else size for size in shape))

    # One input unnamed: pyfunc hands the model the array itself, as Keras expects it; several by
    # name: pyfunc takes a dict of arrays, and Keras matches them to its inputs by name.
    named = len(saved.inputs) > 1
    signature = ModelSignature(
        inputs=Schema([TensorSpec(float32, batch(shape), name if named else None) for name, shape in saved.inputs]),
        outputs=Schema([TensorSpec(float32, batch(saved.output))]),
    )
    model = Model(artifact_path=MODEL_FOLDER, run_id=run_id, signature=signature)
    model.add_flavor("keras", data="model", keras_version=keras.__version__, keras_backend=keras.backend.backend(),
                     save_exported_model=False)
    pyfunc.add_to_model(model, loader_module="mlflow.keras", conda_env="conda.yaml", python_env="python_env.yaml")
    model.model_size_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    model.save(str(root / "MLmodel"))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows (the caller may delete `source` at once), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def part_call(client: MlflowClient, run_id: str, part: _Batch) -> None:
    """One `log_batch` call of a batch's part."""
    client.log_batch(run_id, metrics=part.metrics, params=part.params, tags=part.tags)




def _now_ms() -> int:

    return int(time.time() * 1000)
