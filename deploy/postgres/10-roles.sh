#!/bin/sh
# One PostgreSQL role per service, each allowed into its own database only (docs/distributed.md,
# "What each account can do"):
#
#   role optuna            owns database optuna     workers, `ablate submit`, the optuna-schema step
#   role optuna_dashboard  reads database optuna    optuna-dashboard (SELECT only)
#   role mlflow            owns database mlflow     the MLflow server only
#
# CONNECT on both databases is revoked from PUBLIC, so a role reaches only the database it is
# granted: a worker's role cannot open the mlflow database, MLflow's cannot open optuna. The
# superuser (POSTGRES_USER) is used by this script alone.
#
# The postgres image runs (or sources) it from /docker-entrypoint-initdb.d when the volume is first
# initialised. It is idempotent: run it again (`docker compose exec postgres sh
# /docker-entrypoint-initdb.d/10-roles.sh`) to apply changed passwords from .env. Passwords are
# read from the environment inside psql (\getenv), never put on a command line. The role and
# database names may be changed through the variables below (the tests use throwaway ones); the
# URLs in docker-compose.yml use the defaults. Needs psql 15 or later (\getenv).

: "${POSTGRES_OPTUNA_PASSWORD:?set POSTGRES_OPTUNA_PASSWORD}"
: "${POSTGRES_DASHBOARD_PASSWORD:?set POSTGRES_DASHBOARD_PASSWORD}"
: "${POSTGRES_MLFLOW_PASSWORD:?set POSTGRES_MLFLOW_PASSWORD}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v optuna_db="${ABLATE_OPTUNA_DATABASE:-optuna}" \
    -v optuna_role="${ABLATE_OPTUNA_ROLE:-optuna}" \
    -v dashboard_role="${ABLATE_DASHBOARD_ROLE:-optuna_dashboard}" \
    -v mlflow_db="${ABLATE_MLFLOW_DATABASE:-mlflow}" \
    -v mlflow_role="${ABLATE_MLFLOW_ROLE:-mlflow}" <<'SQL'
\getenv optuna_password POSTGRES_OPTUNA_PASSWORD
\getenv dashboard_password POSTGRES_DASHBOARD_PASSWORD
\getenv mlflow_password POSTGRES_MLFLOW_PASSWORD

-- Roles: login, nothing else (no superuser, no createdb, no createrole); the password is set on
-- every run, so .env stays the source of truth.
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'optuna_role', :'dashboard_role', :'mlflow_role']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE :"optuna_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'optuna_password';
ALTER ROLE :"dashboard_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'dashboard_password';
ALTER ROLE :"mlflow_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'mlflow_password';

-- Databases, each owned by its service's role (so Optuna and MLflow can create their tables).
SELECT format('CREATE DATABASE %I OWNER %I', :'optuna_db', :'optuna_role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'optuna_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'mlflow_role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db') \gexec
ALTER DATABASE :"optuna_db" OWNER TO :"optuna_role";
ALTER DATABASE :"mlflow_db" OWNER TO :"mlflow_role";

-- Nobody but the granted role may connect (PUBLIC has CONNECT and TEMP by default).
REVOKE ALL ON DATABASE :"optuna_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"optuna_db" TO :"optuna_role";
GRANT CONNECT ON DATABASE :"optuna_db" TO :"dashboard_role";
GRANT CONNECT, TEMPORARY ON DATABASE :"mlflow_db" TO :"mlflow_role";

-- Only the owning role creates tables (PostgreSQL before 15 let PUBLIC create in schema public).
-- The dashboard reads Optuna's tables, now and as the optuna role creates them; it writes nothing.
\connect :"optuna_db"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"optuna_role";
GRANT USAGE ON SCHEMA public TO :"dashboard_role";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"dashboard_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"optuna_role" IN SCHEMA public GRANT SELECT ON TABLES TO :"dashboard_role";
\connect :"mlflow_db"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"mlflow_role";
SQL
