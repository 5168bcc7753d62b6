"""One trial from its frozen config, without Optuna or MLflow: the family contract, the fit loop, data, pictures.

`trial.train_trial(run, family, ...)` builds, trains and evaluates one configuration; the caller
passes where to log (`family.TrialLog`) and a pruning hook, so any finished trial can be retrained
from its logged params alone.
"""
