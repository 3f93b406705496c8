"""Real processes: the scoring service, the Dagster UI, PostgreSQL, Spark and the browser."""
