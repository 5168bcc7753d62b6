"""MLflow, and nothing else imports it: experiments, parent and nested runs, deferred writes, reading runs back.

`tracker.Tracker` opens a study's experiment and runs; `trial_run.TrialRun` is one trial's run,
written in the background; `reading` is what the report and the weight study read; `store` holds
the one use of MLflow's internals (its database stores across `fork`).
"""
