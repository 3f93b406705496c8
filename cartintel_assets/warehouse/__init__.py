"""The DuckDB warehouse: transactions, idempotent partition writes, typed temp tables."""
