"""Memory across many trials in one worker: `ablate run` of 200 tiny trials, without and with recycling.

Keras/TensorFlow keep memory from every model a process builds, even after `clear_session()` and
`gc` (keras#21090), so a worker that runs trial after trial grows. `ablate run` and `ablate
worker` therefore run trials in child processes replaced every `--recycle-after N` trials. This
script runs the same study of tiny trials (2 base filters, 64 training images, 1 epoch) once with
`--recycle-after 0` (every trial in the `ablate run` process, as before recycling) and once with
`--recycle-after N`, and samples the resident memory (VmRSS from /proc) of the `ablate run`
process and of its worker children each time a trial ends (read from the command's output).

Reported per mode:
- parent: the `ablate run` process (with recycling it imports no Keras and runs no trial);
- worker: the process that ran the trial (the parent itself without recycling);
- MB/trial: least-squares slope of RSS against the trial count (from trial 10 on, past the
  warm-up); for the worker with recycling, the mean slope within each child's life (the rate at
  which a process grows), and for the whole tree the growth of parent + live children over the run.

    .venv/bin/python benchmarks/memory_growth.py --trials 200 --recycle-after 25
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ABLATE = str(Path(sys.executable).parent / "ablate")
WARMUP = 10  # trials before the slope is fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--recycle-after", type=int, default=25)
    parser.add_argument("--modes", default="in-process,recycled", help="comma-separated: in-process, recycled")
    args = parser.parse_args()

    from _common import report

    results: dict[str, Any] = {}
    for mode in args.modes.split(","):
        recycle = 0 if mode == "in-process" else args.recycle_after
        results[mode] = measure(args.trials, recycle)
        print(f"{mode}: {summary_line(results[mode])}", flush=True)

    rows = []
    for mode, r in results.items():
        rows.append([
            mode if mode == "in-process" else f"{mode} every {args.recycle_after}",
            r["trials"], round(r["wall_s"], 1), r["worker_processes"],
            f"{r['parent_mb'][0]:.0f} -> {r['parent_mb'][-1]:.0f}", round(r["parent_mb_per_trial"], 2),
            round(r["worker_peak_mb"]), round(r["worker_mb_per_trial"], 2),
            f"{r['tree_mb'][0]:.0f} -> {r['tree_mb'][-1]:.0f}", round(r["tree_mb_per_trial"], 2),
        ])  # fmt: skip
    report(
        "memory_growth",
        f"Resident memory over {args.trials} tiny trials in one study (2 filters, 64 images, 1 epoch)",
        ["mode", "trials", "wall s", "worker processes", "parent MB first -> last", "parent MB/trial",
         "worker peak MB", "worker MB/trial (within a process)", "all MB first -> last", "all MB/trial over the run"],
        rows,
        {"results": results, "args": vars(args), "target_mb_per_trial": 5.0},
    )  # fmt: skip


def measure(trials: int, recycle: int) -> dict[str, Any]:
    """Run the study with `ablate run --recycle-after recycle`, sampling RSS at each trial's end."""
    folder = Path(tempfile.mkdtemp(prefix="ablate-memory-"))
    name = f"memory-{recycle}"
    study = {
        "name": name,
        "data": {"dataset": "mnist-embedded", "train_size": 64, "val_size": 32, "test_size": 32},
        "model": {"filters": 2, "depth": 2, "skip": "concat"},
        "train": {"epochs": 1, "batch_size": 64},
        "factors": {},
        "repeats": trials,
        "tracking": {"image_every": 1, "images": 4},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [ABLATE, "run", str(path), "--home", str(folder / "home"), "--recycle-after", str(recycle)]
    ended = re.compile(rf"^\s*(\[w\d+\] )?{re.escape(name)} #(\d+) (?!.* epoch \d+: ).*: ")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[dict[str, Any]] = []
    assert process.stderr is not None
    for line in process.stderr:
        if ended.match(line):
            tree = process_tree(process.pid)
            workers = {pid: rss for pid, rss in tree.items() if pid != process.pid}
            samples.append({"trial": len(samples) + 1, "parent": tree.get(process.pid, 0.0), "children": workers})
    code = process.wait()
    wall = time.perf_counter() - start
    if code != 0 or len(samples) != trials:
        raise SystemExit(f"`{' '.join(command)}` exited {code} after {len(samples)} of {trials} trials")

    parent = [s["parent"] for s in samples]
    tree = [s["parent"] + sum(s["children"].values()) for s in samples]
    if recycle:
        # The worker is the (one) live child; group the samples by child process.
        lives: dict[int, list[tuple[int, float]]] = {}
        for s in samples:
            for pid, rss in s["children"].items():
                lives.setdefault(pid, []).append((s["trial"], rss))
        worker = [max(s["children"].values(), default=0.0) for s in samples]
        slopes = [slope(life) for life in lives.values() if len(life) >= 5]
        worker_rate = statistics.mean(slopes) if slopes else float("nan")
        processes = len(lives)
    else:
        worker = parent
        worker_rate = slope([(s["trial"], s["parent"]) for s in samples if s["trial"] >= WARMUP])
        processes = 1
    return {
        "trials": trials,
        "recycle_after": recycle,
        "wall_s": wall,
        "worker_processes": processes,
        "parent_mb": parent,
        "worker_mb": worker,
        "tree_mb": tree,
        "parent_mb_per_trial": slope([(i + 1, v) for i, v in enumerate(parent) if i + 1 >= WARMUP]),
        "worker_peak_mb": max(worker),
        "worker_mb_per_trial": worker_rate,
        "tree_mb_per_trial": slope([(i + 1, v) for i, v in enumerate(tree) if i + 1 >= WARMUP]),
    }


def process_tree(root: int) -> dict[int, float]:
    """RSS in MB of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        rss = rss_mb(pid)
        if rss is not None:
            found[pid] = rss
        todo += children.get(pid, [])
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of y on x."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else float("nan")


def summary_line(r: dict[str, Any]) -> str:
    return (
        f"{r['wall_s']:.0f}s, {r['worker_processes']} worker process(es), parent {r['parent_mb'][0]:.0f}->"
        f"{r['parent_mb'][-1]:.0f} MB ({r['parent_mb_per_trial']:.2f} MB/trial), worker peak {r['worker_peak_mb']:.0f} MB "
        f"({r['worker_mb_per_trial']:.2f} MB/trial within a process), all {r['tree_mb_per_trial']:.2f} MB/trial"
    )


if __name__ == "__main__":
    main()
