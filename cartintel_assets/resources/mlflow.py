"""MLflow tracking and registry, as a small Dagster resource (not the legacy dagster-mlflow one)."""

from __future__ import annotations

import subprocess
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
        default="",
        description="Where new experiments keep artifacts. Empty: the tracking server's own "
        "artifact store when the tracking URI is a server (http/https), else "
        "<repo>/mlruns/artifacts.",
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
        location = None  # a tracking server stores (or proxies) artifacts where it was told to
        if self.artifact_root or not self.uri().startswith(("http://", "https://")):
            location = (self.artifacts() / name.replace("/", "_")).as_uri()
        return str(mlflow.create_experiment(name, artifact_location=location))

    def run_tags(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        """The provenance tags every training run carries: Dagster run, asset, partition, commit."""
        return {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": ",".join(k.to_user_string() for k in context.selected_asset_keys),
            "dagster.partition": context.partition_key if context.has_partition_key else "none",
            "git.commit": git_commit(),
        }


def git_commit() -> str:
    """The commit of the code that runs, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
