"""Data-quality rules: the SQL quarantine, Great Expectations suites and the scorecard."""
