-- Optuna and MLflow both keep their schema version in alembic's default `alembic_version` table, so
-- they cannot share a database: POSTGRES_DB creates Optuna's (`optuna`), this creates MLflow's.
-- The postgres image runs this file once, when its data volume is first initialized.
CREATE DATABASE mlflow OWNER optuna;
