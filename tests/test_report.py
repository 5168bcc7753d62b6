"""`ablate report` against a tiny real study (real Keras, a real Optuna storage, a real MLflow store),
and its page in a real headless Chromium.

The study is trained once per module (4 trials: skip none/concat x 2 seeds, 2 epochs, 4 filters,
256 images). Every number in the report is checked against what Optuna and MLflow hold.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution
from rich.console import Console

from ablate.analysis import seeds_needed
from ablate.home import resolve_project
from ablate.progress import StudyProgress
from ablate.report import make_report
from ablate.report.figures import split_rows
from ablate.report.importance import importances
from ablate.spec import load_spec, spec_from_dict
from ablate.study import run_study

from conftest import tiny_study

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny end-to-end study of the foundation's test, trained once for this module."""
    root = tmp_path_factory.mktemp("report")
    project = resolve_project(home=root / "home")
    loaded = spec_from_dict(tiny_study(name="tiny-report"))
    with StudyProgress(Console(file=io.StringIO())) as progress:
        outcome = run_study(loaded, project, progress=progress)
    assert outcome.complete == 4
    return project, root


def run_ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([ABLATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_report_matches_what_optuna_and_mlflow_hold(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    report = make_report("tiny-report", project, form="html", out=tmp_path / "out")
    answer = report.answer
    study = optuna.load_study(study_name="tiny-report", storage=project.storage)
    client = MlflowClient(project.tracking_uri)

    # Trials table: one row per Optuna trial, with its state, value, seed, duration and MLflow run.
    trials = {t.number: t for t in study.trials}
    assert [row["number"] for row in answer["trials"]] == sorted(trials)
    for row in answer["trials"]:
        trial = trials[row["number"]]
        assert row["state"] == trial.state.name and row["value"] == trial.value
        assert row["seed"] == trial.user_attrs["ablate.seed"] and row["run_id"] == trial.user_attrs["mlflow_run_id"]
        assert row["params"] == {"model.skip": trial.params["model.skip"]}
        assert row["duration_s"] == pytest.approx(trial.duration.total_seconds())
        assert row["run_url"].endswith(f"/#/experiments/{study.user_attrs['mlflow_experiment_id']}/runs/{row['run_id']}")
        assert client.get_run(row["run_id"]).data.tags["ablate.trial"] == str(trial.number)

    # The effect: skip - no skip, paired by seed, recomputed here from Optuna's values.
    value = {(t.params["model.skip"], t.user_attrs["ablate.seed"]): t.value for t in study.trials}
    diffs = [value[("concat", s)] - value[("none", s)] for s in (0, 1)]
    (effect,) = answer["effects"]
    assert (effect["factor"], effect["level"], effect["baseline"]) == ("model.skip", "concat", "none")
    assert effect["difference"]["mean"] == pytest.approx(np.mean(diffs))
    assert effect["difference"]["n"] == 2 and effect["seeds"] == [0, 1]
    if effect["verdict"] == "unclear":
        needed = seeds_needed(np.std(diffs, ddof=1), float(np.mean(diffs)))
        assert f"--set repeats={needed}" in effect["note"]
    # `ablate reproduce` shares the analysis: its table for this study is the report's effect.
    from ablate.reproduce import compare

    table = compare("skip-vs-noskip", spec_from_dict(tiny_study(name="tiny-report")), project)
    assert table["paired_difference"]["mean"] == effect["difference"]["mean"]
    assert table["paired_difference"]["ci95"] == effect["difference"]["ci95"]
    assert table["paired_difference"]["p_holm"] == effect["p_holm"]
    none_cell = next(c for c in answer["cells"] if c["cell"] == "model.skip=none")
    assert none_cell["estimate"]["mean"] == pytest.approx(np.mean([value[("none", 0)], value[("none", 1)]]))

    # Learning curves: the mean and the band over seeds of MLflow's per-epoch histories.
    for cell, level in (("model.skip=none", "none"), ("model.skip=concat", "concat")):
        run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials if t.params["model.skip"] == level]
        for metric in ("train_loss", "val_loss"):
            histories = [[m.value for m in sorted(client.get_metric_history(r, metric), key=lambda m: m.step)] for r in run_ids]
            curve = answer["curves"][cell][metric]
            assert curve["epochs"] == [1, 2]
            assert curve["mean"] == pytest.approx(np.mean(histories, axis=0).tolist())
            assert curve["low"] == pytest.approx(np.min(histories, axis=0).tolist())
        # The median-seed run (lower middle of two): the seed with the smaller final value.
        median = answer["median_runs"][cell]
        assert median["value"] == min(value[(level, 0)], value[(level, 1)])

    # Best configuration: the cell with the lower mean, as a study file that validates and keeps
    # every fixed setting of the study.
    means = {level: (value[(level, 0)] + value[(level, 1)]) / 2 for level in ("none", "concat")}
    best_level = min(means, key=means.get)
    assert answer["best"]["params"] == {"model.skip": best_level}
    best = load_spec(report.folder / "best.yaml").spec
    assert best.model.skip == best_level and best.model.filters == 4 and best.train.epochs == 2
    assert best.data.train_size == 256 and best.factors == {} and best.name == "tiny-report-best"

    # The folder, and the same folder logged to the study's parent run.
    names = {p.name for p in report.folder.iterdir()}
    assert {"index.html", "report.md", "report.json", "best.yaml", "effects.png", "learning_curves.png",
            "reconstructions.png"} <= names  # fmt: skip
    assert json.loads((report.folder / "report.json").read_text())["effects"][0]["difference"]["mean"] == pytest.approx(np.mean(diffs))
    assert report.logged_to == study.user_attrs["mlflow_parent_run_id"]
    logged = {a.path for a in client.list_artifacts(report.logged_to, "report")}
    assert {"report/index.html", "report/reconstructions.png", "report/best.yaml"} <= logged

    # Reconstructions: clean and noisy rows, then one reconstructed row per variant, cut from
    # the final.png of each variant's median run.
    from PIL import Image

    final = Path(client.download_artifacts(answer["median_runs"]["model.skip=none"]["run_id"], "reconstructions/final.png", str(tmp_path)))
    rows = split_rows(np.asarray(Image.open(final).convert("L")))
    assert [r.shape[0] for r in rows] == [56, 56, 56]  # 28 px images, scale 2, in three rows
    assert not (rows[0] == 255).all() and rows[0].std() > 10  # the clean row holds digits, not the gap


@pytest.mark.slow
def test_markdown_json_and_errors_through_the_command(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    home = str(project.home)
    result = run_ablate("report", "tiny-report", "--home", home, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["study"] == "tiny-report" and len(answer["trials"]) == 4
    assert answer["importances"]["computed"] is False and "1 factor varies" in answer["importances"]["reason"]

    result = run_ablate("report", "tiny-report", "--home", home, "--format", "md", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert md.startswith("# Study `tiny-report`") and "| `model.skip` | concat - none |" in md
    assert sum(line.startswith("| ") and "COMPLETE" in line for line in md.splitlines()) == 4
    mean = answer["effects"][0]["difference"]["mean"]
    assert f"{mean:.4f}" in md  # the Markdown shows the same numbers as the JSON
    assert not (tmp_path / "ablate-report").exists()  # md and json print; they write nothing

    unknown = run_ablate("report", "nope", "--home", home, cwd=tmp_path)
    assert unknown.returncode == 2 and "no study 'nope'" in unknown.stderr and "tiny-report" in unknown.stderr
    nowhere = run_ablate("report", "tiny-report", "--home", str(tmp_path / "empty"), cwd=tmp_path)
    assert nowhere.returncode == 2 and "no studies here" in nowhere.stderr
    assert not (tmp_path / "empty").exists()  # a report from the wrong folder creates nothing


def test_importances_rank_a_planted_factor_first_with_a_bootstrap_range() -> None:
    # A real (in-memory) Optuna study: factor a moves the value by 1.0, factor b by nothing.
    spec = spec_from_dict(tiny_study(factors={"model.skip": ["none", "concat"], "model.filters": [4, 8, 16]})).spec
    distributions = {"model.skip": CategoricalDistribution(["none", "concat"]), "model.filters": CategoricalDistribution([4, 8, 16])}
    rng = np.random.default_rng(0)
    trials = [
        optuna.trial.create_trial(
            params={"model.skip": skip, "model.filters": filters}, distributions=distributions,
            value=float((skip == "concat") * 1.0 + rng.normal(0, 0.05)),
        )
        for skip in ("none", "concat") for filters in (4, 8, 16) for _ in range(3)
    ]  # fmt: skip
    result = importances(spec, trials, resamples=8)
    assert result["computed"] and result["resamples"] == 8 and result["trials"] == 18
    first, second = result["factors"]
    assert first["factor"] == "model.skip" and first["importance"] > 0.8 > second["importance"]
    assert 0 <= first["range"][0] <= first["importance"] <= first["range"][1] <= 1
    assert importances(spec, trials, resamples=0)["computed"] is False


# ---- the page in a real headless Chromium -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make test` installs it as root: apt-get install chromium)")
def test_page_in_headless_chromium(trained: Any, tmp_path: Path) -> None:
    project, _ = trained
    report = make_report("tiny-report", project, form="html", out=tmp_path / "page", log=False)
    page = report.folder / "index.html"
    shots = tmp_path / "screenshots"  # kept under tmp_path as the test's artifacts
    shots.mkdir()
    with Chromium(CHROMIUM, tmp_path / "profile") as browser:
        session = browser.open_page()
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", timeout=60)
        charts = browser.evaluate(session, "document.querySelectorAll('.js-plotly-plot .main-svg').length", until=lambda n: n >= 2)
        rows = browser.evaluate(session, "document.querySelectorAll('#trials-table tbody tr.trial').length")
        image = browser.evaluate(session, "(() => { const i = document.querySelector('img.reconstructions'); return i.complete ? i.naturalWidth : 0; })()")
        full = browser.screenshot(session, shots / "page.png")
        regions = {}
        for selector in ("#chart-effects", "#chart-curves", "img.reconstructions"):
            box = browser.evaluate(session, f"JSON.stringify(document.querySelector('{selector}').getBoundingClientRect())")
            name = selector.strip("#.").replace("img.", "")
            regions[name] = browser.screenshot(session, shots / f"{name}.png", clip=json.loads(box))
        events = list(browser.events)

    assert charts >= 2, "the plotly charts did not render"
    assert rows == 4 == len(report.answer["trials"])
    assert image > 0, "the reconstruction picture did not load"
    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]  # fmt: skip
    assert not errors, errors
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert requests and requests[0] == page.as_uri()
    outside = [url for url in requests if not url.startswith(("file://", "data:", "blob:"))]
    assert not outside, f"the page fetched from outside its file: {outside}"
    for name, picture in {"page": full, **regions}.items():
        assert picture.std() > 5 and len(np.unique(picture)) > 10, f"{name} screenshot is blank"


class Chromium:
    """Headless Chromium driven over the DevTools protocol through a pipe (--remote-debugging-pipe).

    The pipe needs no port and no websocket library: Chromium reads NUL-terminated JSON commands
    on its fd 3 and writes responses and events on its fd 4.
    """

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._buffer = b""

    def __enter__(self) -> Chromium:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes to us
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,4000", f"--user-data-dir={self.profile}",
                 "--remote-debugging-pipe", "about:blank"]  # fmt: skip
        self.process = subprocess.Popen(
            [self.binary, *flags], preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - the browser may be gone already; terminate below
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def send(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 60) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict:
        """Wait until an event of that name has arrived (or already has)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline - time.monotonic()))
        return next(e for e in self.events if e.get("method") == method)

    def open_page(self) -> str:
        """Attach to the start page and return the session to drive it."""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        return self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def evaluate(self, session: str, expression: str, *, until: Any = None, timeout: float = 30) -> Any:
        """Evaluate a JavaScript expression; with `until`, poll until its value satisfies it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)["result"].get("value")
            if until is None or until(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def screenshot(self, session: str, path: Path, clip: dict | None = None) -> np.ndarray:
        """Save a PNG screenshot (of `clip`, a bounding rect, or the whole page) and return its pixels."""
        import base64

        from PIL import Image

        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {k: clip[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params, session=session)["data"]))
        return np.asarray(Image.open(path).convert("L"))

    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, timeout))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)
