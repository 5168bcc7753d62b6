"""The study file and everything decided from it alone: schema, loading, frozen run configs, rules, attribute names.

The lowest layer above `ablate.errors`: it imports pydantic and YAML, never Keras, Optuna or MLflow,
so a study file is checked in a fraction of a second. `loading.load_spec` reads a file (with its
profile and `--set` overrides) into a `study_spec.StudySpec`; `StudySpec.run_config` turns one
cell and seed into the `run_config.RunConfig` that a trial is built from.
"""
