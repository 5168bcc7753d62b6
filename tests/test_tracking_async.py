"""Deferred MLflow logging of trial runs, against a real local MLflow store (SQLite + artifact folder).

A trial's logging calls return at once and a background thread writes them; these tests check
that nothing is lost, that the run ends after its data is written, that consecutive metrics
become one `log_batch`, and that a write the store refuses is raised in the caller's thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from ablate.tracking.trial_run import SYNC_ENV, TrialRun
from ablate.tracking.tracker import Tracker


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    folder = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{folder / 'mlflow.db'}", artifact_root=str(folder / "artifacts"))


@pytest.fixture(scope="module")
def parent(tracker: Tracker) -> tuple[str, str]:
    experiment = tracker.experiment_id("async")
    return experiment, tracker.parent_run(experiment, "async", {})


def start(tracker: Tracker, parent: tuple[str, str], name: str = "trial") -> TrialRun:
    return tracker.start_trial(*parent, name, {"ablate.cell": name})


def test_everything_logged_is_written_before_the_run_ends(tracker: Tracker, parent) -> None:
    run = start(tracker, parent)
    assert run._writer is not None  # trial runs are deferred
    run.log_params({f"p{i:03d}": i for i in range(250)} | {"flag": True, "none": None})  # > 100: several calls
    for epoch in range(1, 6):
        run.log_metrics(epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    image = np.zeros((6, 9, 3), np.uint8)
    run.log_image(image, "reconstructions/epoch_001.png")
    image[:] = 255  # the caller reuses its array: the queued image is a copy
    run.log_text("Model: unet", "model_summary.txt")
    run.set_tags({"ablate.extra": "x" * 6000})
    run.finish("complete", epoch=5)

    client = tracker.client
    ended = client.get_run(run.run_id)
    assert ended.info.status == "FINISHED"
    assert ended.data.tags["ablate.state"] == "complete" and ended.data.tags["ablate.stopped_epoch"] == "5"
    assert len(ended.data.tags["ablate.extra"]) == 5000
    assert len(ended.data.params) == 252 and ended.data.params["flag"] == "true" and ended.data.params["none"] == "null"
    for metric in ("train_loss", "val_loss"):
        assert [m.step for m in client.get_metric_history(run.run_id, metric)] == [1, 2, 3, 4, 5]
    assert client.get_metric_history(run.run_id, "val_loss")[-1].value == pytest.approx(0.4)
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"model_summary.txt", "reconstructions"}
    stored = Path(client.download_artifacts(run.run_id, "reconstructions/epoch_001.png", str(tracker_tmp(tracker))))
    from PIL import Image

    assert np.asarray(Image.open(stored)).max() == 0  # written as it was when logged
    assert run._writer is None  # after finish, calls (e.g. a second finish) write directly


def tracker_tmp(tracker: Tracker) -> Path:
    path = Path(tracker.tracking_uri.removeprefix("sqlite:///")).parent / "downloads"
    path.mkdir(exist_ok=True)
    return path


def test_a_file_may_be_deleted_as_soon_as_it_is_logged(tracker: Tracker, parent, tmp_path: Path) -> None:
    run = start(tracker, parent, "file")
    path = tmp_path / "model.keras"
    path.write_bytes(b"weights" * 1000)
    run.log_file(str(path), "model")
    path.unlink()  # as a TemporaryDirectory does right after
    run.finish("complete")
    stored = Path(tracker.client.download_artifacts(run.run_id, "model/model.keras", str(tracker_tmp(tracker))))
    assert stored.read_bytes() == b"weights" * 1000


def test_metrics_queued_meanwhile_go_out_in_one_batch(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "batched")
    calls: list[int] = []
    release = threading.Event()
    real = tracker.client.log_batch

    def counting(run_id, metrics=(), params=(), tags=(), **kwargs):  # the real call, counted and held once
        if run_id == run.run_id:
            calls.append(len(metrics))
            if len(calls) == 1:
                release.wait(timeout=30)
        return real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    tracker.client.log_batch = counting  # type: ignore[method-assign]
    try:
        run.log_metrics(1, {"a": 1.0, "b": 1.0})  # the writer takes this one and is held in the store call
        while not calls:
            threading.Event().wait(0.01)
        for epoch in range(2, 12):  # these queue up meanwhile
            run.log_metrics(epoch, {"a": float(epoch), "b": float(epoch)})
        release.set()
        run.flush()
    finally:
        tracker.client.log_batch = real  # type: ignore[method-assign]
    assert calls == [2, 20]  # the ten queued epochs in a single log_batch
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "b")] == list(range(1, 12))
    run.finish("complete")


def test_a_refused_write_is_raised_by_the_next_call(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "refused")
    run.log_params({"model.filters": 16})
    run.flush()
    run.log_params({"model.filters": 32})  # MLflow refuses to change a logged param (not transient)
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        run.flush()
    run.log_metrics(1, {"val_loss": 0.5})  # raised once: the trial goes on to record its failure
    run.flush()
    run.finish("failed", error=RuntimeError("the trial failed"))
    ended = tracker.client.get_run(run.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags["ablate.error"] == "RuntimeError: the trial failed"
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "val_loss")] == [1]


def test_the_error_surfaces_in_the_next_logging_call_during_training(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "next-call")
    run.log_params({"seed": 0})
    run.flush()
    run.log_params({"seed": 1})
    writer = run._writer
    assert writer is not None
    while writer._error is None:  # the background write fails (no timing asserted, just waited for)
        threading.Event().wait(0.01)
    with pytest.raises(MlflowException, match="Changing param values"):
        run.log_metrics(1, {"val_loss": 1.0})  # as in a Keras epoch callback: the trial fails here
    run.finish("failed", error=RuntimeError("stopped"))
    assert tracker.client.get_run(run.run_id).info.status == "FAILED"


def test_finish_complete_with_a_lost_write_ends_failed_and_raises(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "lost")
    run.log_params({"a": 1})
    run.flush()
    run.log_params({"a": 2})
    with pytest.raises(MlflowException, match="Changing param values"):
        run.finish("complete", epoch=3)
    ended = tracker.client.get_run(run.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags["ablate.state"] == "failed"
    assert "Changing param values" in ended.data.tags["ablate.error"]


def test_interrupted_run_ends_killed_and_a_lost_write_does_not_mask_the_interrupt(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "interrupted")
    run.log_params({"a": 1})
    run.flush()
    run.log_params({"a": 2})
    run.log_metrics(1, {"val_loss": 0.25})
    run.finish("interrupted", error=KeyboardInterrupt())  # does not raise the write's error
    ended = tracker.client.get_run(run.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["ablate.state"] == "interrupted"
    assert ended.data.tags["ablate.error"] == "KeyboardInterrupt: "
    assert "Changing param values" in ended.data.tags["ablate.tracking_error"]
    assert {a.path for a in tracker.client.list_artifacts(run.run_id)} == {"error.txt"}


def test_interrupt_after_clean_logging_keeps_every_epoch(tracker: Tracker, parent) -> None:
    run = start(tracker, parent, "ctrl-c")
    for epoch in range(1, 4):
        run.log_metrics(epoch, {"val_loss": float(epoch)})
    run.finish("interrupted", error=KeyboardInterrupt("signal 2"), epoch=3)
    ended = tracker.client.get_run(run.run_id)
    assert ended.info.status == "KILLED" and "ablate.tracking_error" not in ended.data.tags
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "val_loss")] == [1, 2, 3]


def test_a_missing_run_fails_on_the_next_call(tracker: Tracker) -> None:
    run = TrialRun(tracker.client, "0" * 32, deferred=True)
    run.log_metrics(1, {"val_loss": 1.0})
    with pytest.raises(MlflowException):
        run.flush()


def test_sync_env_writes_in_the_call(tracker: Tracker, parent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNC_ENV, "1")
    run = start(tracker, parent, "sync")
    assert run._writer is None
    run.log_metrics(1, {"val_loss": 1.0})
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "val_loss")] == [1]
    run.log_params({"a": 1})
    with pytest.raises(MlflowException, match="Changing param values"):
        run.log_params({"a": 2})
    run.finish("complete")
    assert tracker.client.get_run(run.run_id).info.status == "FINISHED"
