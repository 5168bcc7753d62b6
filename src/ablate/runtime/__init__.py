"""Studies in their Optuna storage and the processes that run their trials.

From the bottom: `optuna_internals` (every use of Optuna's private API), `storage` (reconnecting
RDB storage, retries, heartbeats), `studies` (create, resume, enqueue, tally), `sampling`,
`work` / `trial` / `retries` / `worker_loop` (a worker's loop over trials), `recycling` / `forks` /
`supervisor` / `worker_process` (the processes that loop runs in), `engines` (KerasTuner, the
weight study), and at the top `run` (`ablate run`), `submit` and `status`.
"""
