"""MLflow tracking and registry, as a small Dagster resource (not the legacy dagster-mlflow one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
from pydantic import Field

from cartintel_assets import settings
from cartintel_assets.registry.tracking import Store


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

    def store(self) -> Store:
        """This store, addressed through its own client (MLflow's global URI is never set).

        New experiments keep artifacts under `artifact_root`, or <repo>/mlruns/artifacts, except
        on a tracking server without `artifact_root`, which stores (or proxies) them itself."""
        uri = self.uri()
        if self.artifact_root:
            return Store(uri, Path(self.artifact_root).resolve())
        if uri.startswith(("http://", "https://")):
            return Store(uri)
        return Store(uri, settings.mlruns_dir() / "artifacts")

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
