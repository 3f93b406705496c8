"""Where cartintel finds things: every location is one setting, read when used (never at import).

Each setting is an environment variable with a default relative to the working directory (the
repository root for `make demo`, `make dev` and `make test`).
"""

from __future__ import annotations

import os
from pathlib import Path

LOCAL_PSEUDONYM_KEY = "cartintel-local-development-key"  # override in any real deployment


def _path(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default).expanduser().resolve()


def warehouse_path() -> Path:
    """DuckDB warehouse file: $CARTINTEL_WAREHOUSE, default data/warehouse.duckdb."""
    return _path("CARTINTEL_WAREHOUSE", "data/warehouse.duckdb")


def storefront_dir() -> Path:
    """Simulated storefront output (landing/ and truth/): $CARTINTEL_STOREFRONT, default data/storefront."""
    return _path("CARTINTEL_STOREFRONT", "data/storefront")


def landing_dir() -> Path:
    """Landing files, one folder per day: $CARTINTEL_LANDING, default <storefront>/landing."""
    env = os.environ.get("CARTINTEL_LANDING")
    return Path(env).expanduser().resolve() if env else storefront_dir() / "landing"


def shared_data_dir() -> Path:
    """The real public datasets: $CARTINTEL_SHARED_DATA, default ../shared/data."""
    return _path("CARTINTEL_SHARED_DATA", "../shared/data")


def pseudonym_key() -> str:
    """Key of the keyed hash that pseudonymises customer ids: $CARTINTEL_PSEUDONYM_KEY."""
    return os.environ.get("CARTINTEL_PSEUDONYM_KEY") or LOCAL_PSEUDONYM_KEY


def mlruns_dir() -> Path:
    """MLflow store (SQLite tracking/registry + artifacts): $CARTINTEL_MLRUNS, default mlruns."""
    return _path("CARTINTEL_MLRUNS", "mlruns")


def mlflow_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite store (an absolute path, as MLflow needs)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def reports_dir() -> Path:
    """Generated reports (Evidently drift reports, ...): $CARTINTEL_REPORTS, default data/reports."""
    return _path("CARTINTEL_REPORTS", "data/reports")
