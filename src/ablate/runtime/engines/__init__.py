"""Engines other than Optuna's own trial loop, each with its own path through `ablate.runtime.run.run_study`.

`engine: optuna` (the default) is `ablate.runtime.worker_loop`. `engine: keras-tuner`
(`keras_tuner`) lets KerasTuner's Hyperband, BayesianOptimization or RandomSearch choose the trials
while ablate trains and records them as the Optuna engine does (docs/engines.md). A weight study
(`ensemble.source: study`, `weight_study`) scores weight vectors on cached predictions in one process.
"""
