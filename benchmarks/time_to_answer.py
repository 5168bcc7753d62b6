"""Time to answer: wall time of the commands a user runs to get an answer, before and after tuning.

Two questions, each run as a user runs it, in a fresh project folder:

- `ablate reproduce skip-vs-noskip --profile quick` (6 trials x 8 epochs, the slides' comparison);
- `ablate run studies/search_unet.yaml --profile quick` (a 24-trial TPE search with Hyperband
  pruning).

Configurations, each a whole command run (interleaved, so a drift in the machine's load hits all):

- `after`: the defaults (MLflow logging deferred to a background thread; trials in forks of a warm
  worker process, recycled every 25 trials or 60 s);
- `before`: the same code with the tuning switched off: `ABLATE_TRACKING_SYNC=1` (every MLflow
  call on the training thread) and `--recycle-after 0` (every trial in the command's process),
  which is how trials ran before the performance work;
- with `--before-tree DIR`, also `landed`: the command from another checkout's `src/` (e.g. a git
  worktree of the commit before the performance work), for the reproduction only when that tree has
  no `studies/search_unet.yaml`.

    .venv/bin/python benchmarks/time_to_answer.py --repeats 2
    git worktree add /tmp/before 7b100d5 && .venv/bin/python benchmarks/time_to_answer.py --before-tree /tmp/before
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = {
    "reproduce skip-vs-noskip (quick)": ["reproduce", "skip-vs-noskip", "--profile", "quick"],
    "search_unet.yaml (quick: 24 trials)": ["run", "studies/search_unet.yaml", "--profile", "quick"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--questions", default=",".join(QUESTIONS), help="comma-separated names of the questions")
    parser.add_argument("--before-tree", type=Path, help="another checkout whose src/ runs as `landed`")
    args = parser.parse_args()

    from _common import report

    configs: dict[str, dict[str, Any]] = {
        "after": {"env": {}, "extra": [], "tree": REPO},
        "before": {"env": {"ABLATE_TRACKING_SYNC": "1"}, "extra": ["--recycle-after", "0"], "tree": REPO},
    }
    if args.before_tree:
        configs["landed"] = {"env": {"PYTHONPATH": str(args.before_tree / "src")}, "extra": [], "tree": args.before_tree}
    times: dict[str, dict[str, list[float]]] = {}
    for question in args.questions.split(","):
        command = QUESTIONS[question]
        for _ in range(args.repeats):
            for config, how in configs.items():
                if not (how["tree"] / command[1]).exists() and command[0] == "run":
                    continue  # that checkout has no such study file
                seconds = run(command + how["extra"], how["env"], cwd=how["tree"])
                times.setdefault(question, {}).setdefault(config, []).append(seconds)
                print(f"{question} [{config}]: {seconds:.1f} s", flush=True)

    rows = []
    for question, by_config in times.items():
        after = statistics.median(by_config["after"])
        for config, values in by_config.items():
            median = statistics.median(values)
            rows.append([question, config, len(values), round(median, 1), round(median / after, 2)])
    report(
        "time_to_answer",
        "Wall time of a user's command, fresh project folder (median over repeats)",
        ["question", "configuration", "runs", "median s", "x after"],
        rows,
        {"times": times, "args": {k: str(v) for k, v in vars(args).items()}},
    )


def run(arguments: list[str], env: dict[str, str], *, cwd: Path) -> float:
    """Wall seconds of one `ablate` command in a fresh project folder; exits if the command fails."""
    home = Path(tempfile.mkdtemp(prefix="ablate-answer-"))
    command = [sys.executable, "-m", "ablate", *arguments, "--home", str(home)]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


if __name__ == "__main__":
    main()
