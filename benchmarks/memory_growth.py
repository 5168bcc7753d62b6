"""Memory across many trials in one worker: `ablate run` of 200 tiny trials, in one process and recycled.

Keras/TensorFlow keep memory from every model a process builds, even after `clear_session()` and
`gc` (keras#21090), so a worker that runs trial after trial grows. `ablate run` and `ablate
worker` therefore run trials in processes replaced every `--recycle-after N` trials (and, on Linux,
forked from a warm process that imported Keras once, a fork taking no new trial after
$ABLATE_FORK_SECONDS). This script runs the same study of tiny trials (2 base filters, 64 training
images, 1 epoch) in each mode and samples the memory of the whole process tree each time a trial
ends (read from the command's output):

- `in-process`: `--recycle-after 0`, every trial in the `ablate run` process (as before recycling);
- `fork`: `--recycle-after N`, batches in forks of one warm process (the default on Linux);
- `exec`: the same with `ABLATE_FORK=0`: a freshly started `ablate worker` process per batch.

Memory is PSS (proportional set size, /proc/PID/smaps_rollup): pages a fork shares with its warm
parent are counted once, split between them, so the sum over the tree is what the tree costs.
Reported per mode: the tree's memory at the first and last trial and its least-squares slope in
MB per trial over the run (from trial 10 on, past the warm-up), the tree's peak, the largest RSS of
any process, how many processes ran trials, and the wall time.

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
    parser.add_argument("--modes", default="in-process,fork,exec", help="comma-separated: in-process, fork, exec")
    args = parser.parse_args()

    from _common import report

    results: dict[str, Any] = {}
    for mode in args.modes.split(","):
        results[mode] = measure(args.trials, mode, args.recycle_after)
        print(f"{mode}: {summary_line(results[mode])}", flush=True)

    rows = []
    for mode, r in results.items():
        rows.append([
            mode if mode == "in-process" else f"{mode}, every {args.recycle_after}",
            r["trials"], round(r["wall_s"], 1), r["trial_processes"],
            f"{r['tree_mb'][0]:.0f} -> {r['tree_mb'][-1]:.0f}", round(r["tree_mb_per_trial"], 2),
            round(max(r["tree_mb"])), round(r["largest_rss_mb"]),
        ])
    report(
        "memory_growth",
        f"Memory (PSS of the process tree) over {args.trials} tiny trials in one study (2 filters, 64 images, 1 epoch)",
        ["mode", "trials", "wall s", "processes that ran trials", "tree MB first -> last", "tree MB/trial",
         "tree peak MB", "largest process RSS MB"],
        rows,
        {"results": results, "args": vars(args), "target_mb_per_trial": 5.0},
    )


def measure(trials: int, mode: str, recycle_after: int) -> dict[str, Any]:
    """Run the study in one mode, sampling the process tree's memory at each trial's end."""
    folder = Path(tempfile.mkdtemp(prefix="ablate-memory-"))
    name = f"memory-{mode}"
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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "ABLATE_FORK": "0" if mode == "exec" else "1"}
    recycle = 0 if mode == "in-process" else recycle_after
    command = [ABLATE, "run", str(path), "--home", str(folder / "home"), "--recycle-after", str(recycle)]
    ended = re.compile(rf"^\s*(\[w\d+\] )?{re.escape(name)} #(\d+) (?!.* epoch \d+: ).*: ")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[dict[str, Any]] = []
    assert process.stderr is not None
    for line in process.stderr:
        if ended.match(line):
            tree = process_tree(process.pid)
            samples.append({"trial": len(samples) + 1, "pss": sum(p["pss"] for p in tree.values()),
                            "rss": max(p["rss"] for p in tree.values()), "gpu_mb": gpu_used_mb()})
    code = process.wait()
    wall = time.perf_counter() - start
    if code != 0 or len(samples) != trials:
        raise SystemExit(f"`{' '.join(command)}` exited {code} after {len(samples)} of {trials} trials")
    from optuna import load_study  # which processes ran the trials: the trials' worker attrs

    workers = {t.user_attrs.get("ablate.worker") for t in load_study(study_name=name, storage=f"sqlite:///{folder / 'home' / 'optuna.db'}").trials}
    tree = [s["pss"] for s in samples]
    return {
        "mode": mode,
        "trials": trials,
        "recycle_after": recycle,
        "wall_s": wall,
        "trial_processes": len(workers),
        "tree_mb": tree,
        "tree_mb_per_trial": slope([(i + 1, v) for i, v in enumerate(tree) if i + 1 >= WARMUP]),
        "largest_rss_mb": max(s["rss"] for s in samples),
        # GPU memory in use at each trial's end (nvidia-smi), where there is a GPU: with a fresh
        # process per trial it returns to its baseline between trials.
        "gpu_mb": [s["gpu_mb"] for s in samples] if samples[0]["gpu_mb"] is not None else None,
    }


def process_tree(root: int) -> dict[int, dict[str, float]]:
    """PSS and RSS in MB of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, dict[str, float]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        memory = memory_mb(pid)
        if memory is not None:
            found[pid] = memory
        todo += children.get(pid, [])
    return found


def memory_mb(pid: int) -> dict[str, float] | None:
    """{"pss": ..., "rss": ...} of one process in MB, or None if it is gone."""
    values: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("Pss", "Rss"):
                values[key.lower()] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return values if len(values) == 2 else None


def gpu_used_mb() -> float | None:
    """Memory in use on the first GPU in MB (nvidia-smi), or None where there is none."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
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
        f"{r['wall_s']:.0f}s, {r['trial_processes']} process(es) ran trials, tree {r['tree_mb'][0]:.0f}->"
        f"{r['tree_mb'][-1]:.0f} MB PSS ({r['tree_mb_per_trial']:.2f} MB/trial), peak {max(r['tree_mb']):.0f} MB, "
        f"largest RSS {r['largest_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
