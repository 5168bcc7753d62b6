-- The MLflow backend store gets its own database beside the Optuna storage (POSTGRES_DB).
-- Runs once, when the postgres volume is first initialised.
CREATE DATABASE mlflow;
