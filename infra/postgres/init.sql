-- Run once by the postgres image on a new volume (docker-entrypoint-initdb.d): the MLflow
-- backend store beside Dagster's database, owned by the same role (POSTGRES_USER).
SELECT format('CREATE DATABASE mlflow OWNER %I', current_user)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
