"""MLflow tracking and registry, as a small Dagster resource (not the legacy dagster-mlflow one)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from cartintel_assets import settings


class MLflowResource(dg.ConfigurableResource):
    """Where runs and registered models live; defaults to the project's store under mlruns/."""

    tracking_uri: str = Field(
        default="", description="Empty: $MLFLOW_TRACKING_URI or sqlite:///<repo>/mlruns/mlflow.db."
    )
    artifact_root: str = Field(
        default="", description="Empty: <repo>/mlruns/artifacts (new experiments only)."
    )

    def uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def artifacts(self) -> Path:
        return (
            Path(self.artifact_root).resolve()
            if self.artifact_root
            else settings.mlruns_dir() / "artifacts"
        )

    def activate(self) -> None:
        """Point MLflow (tracking and registry) at this store, at run time."""
        import mlflow

        if self.uri().startswith("sqlite:///"):
            Path(self.uri().removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri())

    def experiment_id(self, name: str) -> str:
        """Activate the store and get or create the experiment."""
        import mlflow

        self.activate()
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(
            mlflow.create_experiment(
                name, artifact_location=(self.artifacts() / name.replace("/", "_")).as_uri()
            )
        )
