"""Where cartintel finds things: every location is one setting, read when used (never at import).

Each setting is an environment variable with a default relative to the working directory (the
repository root for `make demo`, `make dev` and `make test`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

# Local development only: anywhere else (CARTINTEL_ENV other than `local`) the key must be set
LOCAL_PSEUDONYM_KEY = "cartintel-local-development-key"
LOCAL = "local"


class MissingSecretError(RuntimeError):
    """A secret that a deployment (not local development) must be given is not set."""


def deployment_env() -> str:
    """Where this runs: $CARTINTEL_ENV, default `local` (the deployment manifests set
    `production`); outside local development every secret must be set."""
    return os.environ.get("CARTINTEL_ENV") or LOCAL


def secret(name: str, local_default: str | None = None) -> str | None:
    """The secret in environment variable `name`, or in the file `$<name>_FILE` names (Compose
    and Kubernetes mount secrets as files). Unset: `local_default` in local development;
    elsewhere a `MissingSecretError` naming the variable (never a default published in code)."""
    value = os.environ.get(name)
    if value:
        return value
    file = os.environ.get(f"{name}_FILE")
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            raise MissingSecretError(f"{name}_FILE names {file}, which cannot be read") from exc
        if not value:
            raise MissingSecretError(f"{name}_FILE names {file}, which is empty")
        return value
    env = deployment_env()
    if env == LOCAL:
        return local_default
    raise MissingSecretError(
        f"{name} is not set, and CARTINTEL_ENV={env} is not local development: set it from the"
        " deployment's secrets (infra/README.md); the local default is published in the code"
    )


def crash_point(name: str) -> None:
    """Where a write spans two stores (the registry and the warehouse, a spool and the
    warehouse), the point between them, named: when $CARTINTEL_CRASH_AT names it, this process
    kills itself with SIGKILL there, as an OOM kill or an eviction would. The crash-safety tests
    set it in a subprocess to kill it exactly there; unset (always, outside those tests) it costs
    one dictionary lookup."""
    if os.environ.get("CARTINTEL_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


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
    """Key of the keyed hash that pseudonymises customer ids: $CARTINTEL_PSEUDONYM_KEY (required
    outside local development, see `secret`)."""
    return secret("CARTINTEL_PSEUDONYM_KEY", LOCAL_PSEUDONYM_KEY) or LOCAL_PSEUDONYM_KEY


def mlruns_dir() -> Path:
    """MLflow store (SQLite tracking/registry + artifacts): $CARTINTEL_MLRUNS, default mlruns."""
    return _path("CARTINTEL_MLRUNS", "mlruns")


def mlflow_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite store (an absolute path, as MLflow needs)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def reports_dir() -> Path:
    """Generated reports (Evidently drift reports, ...): $CARTINTEL_REPORTS, default data/reports."""
    return _path("CARTINTEL_REPORTS", "data/reports")


def deployment_settings_path() -> Path:
    """The deployed plan and rollout settings (YAML), one file read by the assets, the CLI and the
    scoring service alike: $CARTINTEL_SETTINGS, default cartintel.yaml (absent: the defaults)."""
    return _path("CARTINTEL_SETTINGS", "cartintel.yaml")


M = TypeVar("M", bound=BaseModel)


def deployed_over(model: type[M], section: str, values: BaseModel) -> M:
    """`model` from the deployment file's `section`, under the fields of `values` (an instance of
    `model` or of a subclass, e.g. a Dagster config) that were set explicitly."""
    explicit = values.model_dump(include=set(values.model_fields_set) & set(model.model_fields))
    return deployed(model, section, explicit)


def deployed(model: type[M], section: str, explicit: Mapping[str, Any] | None = None) -> M:
    """`model` built from the deployment file's `section`, under the values set `explicitly` (a
    Dagster run's config, a resource's arguments), over the model's defaults."""
    path = deployment_settings_path()
    doc: Any = yaml.safe_load(path.read_text()) if path.exists() else {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of sections, e.g. 'plan:' and 'rollout:'")
    values = doc.get(section) or {}
    unknown = sorted(set(values) - set(model.model_fields)) if isinstance(values, dict) else None
    if unknown is None or unknown:
        raise ValueError(
            f"{path}: section '{section}' has unknown settings {unknown};"
            f" known: {sorted(model.model_fields)}"
        )
    try:
        return model.model_validate({**values, **(explicit or {})})
    except ValidationError as err:
        raise ValueError(f"{path}: section '{section}' is invalid: {err}") from err
