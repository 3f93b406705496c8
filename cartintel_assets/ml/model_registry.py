"""Log a risk model to MLflow as a pyfunc (calibrated probabilities) and register it by alias.

No Dagster import; the MLflow tracking URI is set by the caller (the MLflow resource).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from cartintel_assets.ml.abandonment import RiskModel

# Pinned to the lock, passed explicitly (inference costs seconds and guesses both xgboost names).
PIP_REQUIREMENTS = ["xgboost-cpu==3.2.0", "scikit-learn==1.9.1", "pandas==2.3.3", "numpy==2.4.6"]


class RiskModelPyfunc(PythonModel):
    """Serves calibrated risk probabilities from a saved `RiskModel`."""

    def load_context(self, context: Any) -> None:
        self.model = RiskModel.load(Path(context.artifacts["risk_model"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        return self.model.predict_proba(model_input)


def log_risk_model(model: RiskModel, example: pd.DataFrame) -> str:
    """Log the model in the active run; return its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "risk_model"
        model.save(folder)
        sample = model.typed(example.head(5))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskModelPyfunc(),
            artifacts={"risk_model": str(folder)},
            signature=infer_signature(sample, model.predict_proba(sample)),
            input_example=sample,
            pip_requirements=PIP_REQUIREMENTS,
        )
    return str(info.model_uri)


def register(model_uri: str, name: str, alias: str, tags: dict[str, str]) -> str:
    """Register `model_uri` as a new version of `name`, tag it and point `alias` at it."""
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, version.version, k, v)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def version_by_alias(name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None
