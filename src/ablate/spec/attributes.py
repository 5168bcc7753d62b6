"""The names ablate stores on Optuna studies and trials: one vocabulary for every layer that reads them.

These strings are in every study already stored; renaming one would orphan those studies, so they
stay exactly as they are (`mlflow_run_id` has no `ablate.` prefix for that reason).
"""

from __future__ import annotations

# On the study.
SPEC_ATTR = "ablate.spec"  # the validated spec as a study file holds it (workers rebuild the spec from it)
FINGERPRINT_ATTR = "ablate.fingerprint"  # the settings that make results comparable (resume checks them)
EXPERIMENT_ATTR = "mlflow_experiment_id"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
BACKEND_ATTR = "ablate.backend"  # the Keras backend of the study's first run: others refuse it (ablate.backends)
BACKEND_FACTOR = "train.backend"  # BACKEND_ATTR of a study whose backend is a factor: each level on its own workers
MEMBERS_ATTR = "ablate.ensemble.members"  # the source runs a weight study was searched over
NOISE_FLOOR_ATTR = "ablate.noise_floor"  # `ablate audit`: how far two runs of one trial with one seed land apart

# On each trial.
CELL_ATTR = "ablate.cell"  # the cell key (`model.skip=concat`), or `trial-N` for a searched trial
SEED_ATTR = "ablate.seed"
RUN_ATTR = "mlflow_run_id"  # the trial's nested MLflow run
ERROR_ATTR = "ablate.error"  # why a trial failed, was skipped or was interrupted
SKIPPED = "skipped:"  # the start of ERROR_ATTR of a trial that was never run (a duplicate, over budget)
WORKER_ATTR = "ablate.worker"  # host:pid of the worker that ran the trial
RETRY_OF_TRIAL = "ablate.retry_of_trial"
RETRY_OF_RUN = "ablate.retry_of_run"
RETRIED_IN_RUN = "ablate.retried_in_run"  # an MLflow tag on the killed run: the run of its retry
RETRY_REASON = "ablate.retry_reason"
WEIGHTS_ATTR = "ablate.weights"  # a weight trial's ensemble weights
MSE_ATTR = "ablate.val_mse"  # a weight trial's other validation score
LOSS_ATTR = "ablate.val_loss"
TRIAL_ID_ATTR = "keras_tuner.trial_id"  # KerasTuner's id of the trial (a retry keeps it)
EPOCHS_ATTR = "keras_tuner.epochs"  # Hyperband: the epoch budget of the trial
CONFIRM_ATTR = "ablate.confirm"  # a search's confirmation trial: "best" or "baseline" (absent on search trials)
CONFIRMS_ATTR = "ablate.confirms_trial"  # the number of the search trial a confirmation trial confirms
CONFIRM_CELLS = {"best": "confirm-best", "baseline": "confirm-baseline"}  # CELL_ATTR of confirmation trials
# (a baseline chosen with confirm.baseline: "confirm-baseline LEVELS"; see StudySpec.confirmation_cell)
CONFIRM_PREFIX = "confirm-"  # every confirmation trial's cell starts so; a search trial's is trial-N
