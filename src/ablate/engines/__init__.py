"""Search engines other than Optuna's own samplers.

`engine: optuna` (the default) is `ablate.study` and `ablate.worker`. `engine: keras-tuner`
(`ablate.engines.keras_tuner`) lets KerasTuner's Hyperband, BayesianOptimization or RandomSearch
choose the trials, while ablate trains them and records them exactly as the Optuna engine does: the
same Optuna storage layout and the same MLflow runs. See docs/engines.md.
"""
