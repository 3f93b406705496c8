"""One MLflow store (tracking and registry), addressed explicitly through its own `MlflowClient`.

Nothing here sets MLflow's global tracking URI or opens a fluent "active run": two stores can be
used side by side in one process (a test's and the deployment's, a benchmark's and the demo's)
without one redirecting the other. No Dagster import.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis


@dataclass(frozen=True)
class Store:
    """A tracking and registry URI, and where new experiments keep their artifacts (None: the
    tracking server's own artifact store)."""

    uri: str
    artifact_root: Path | None = None

    def __post_init__(self) -> None:
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    @cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        """Get or create the experiment `name`."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root / name.replace("/", "_")).as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    @contextmanager
    def run(
        self, experiment_id: str, tags: dict[str, str] | None = None, run_name: str | None = None
    ) -> Iterator[Run]:
        """A run that ends FINISHED, or FAILED when its block raises."""
        created = self.client.create_run(experiment_id, tags=tags or {}, run_name=run_name)
        run = Run(self, created.info.run_id, experiment_id)
        try:
            yield run
        except BaseException:
            self.client.set_terminated(run.run_id, "FAILED")
            raise
        self.client.set_terminated(run.run_id, "FINISHED")

    def log_evaluation(
        self,
        experiment_id: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, float],
        steps: list[dict[str, float]],
    ) -> str:
        """One finished evaluation as a run (`steps[i]` logged at step i); returns its run id."""
        with self.run(experiment_id, tags, run_name) as run:
            run.log_params(params)
            run.log_metrics(metrics)
            for i, step in enumerate(steps):
                run.log_metrics(step, step=i)
        return run.run_id

    def location(self, model_uri: str) -> str:
        """Where the artifacts of `models:/<name>/<version>`, `models:/<name>@<alias>` or
        `models:/<model_id>` are stored, resolved through this store's client (MLflow's own
        `models:/` artifact repository asks the global registry URI instead)."""
        path = model_uri.removeprefix("models:/")
        if "@" in path:
            name, alias = path.split("@", 1)
            version = self.client.get_model_version_by_alias(name, alias).version
            return str(self.client.get_model_version_download_uri(name, version))
        if "/" in path:
            name, version = path.split("/", 1)
            return str(self.client.get_model_version_download_uri(name, version))
        return str(self.client.get_logged_model(path).artifact_location)

    def download(self, artifact_uri: str, dst: Path) -> Path:
        """Download `artifact_uri` (a `models:/` URI, or an artifact location) from this store."""
        if artifact_uri.startswith("models:/"):
            artifact_uri = self.location(artifact_uri)
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri,
                dst_path=str(dst),
                tracking_uri=self.uri,
                registry_uri=self.uri,
            )
        )

    @contextmanager
    def version_artifacts(self, name: str, version: str) -> Iterator[Path]:
        """The `artifacts/` folder of a registered version, downloaded to a temporary folder."""
        with tempfile.TemporaryDirectory() as tmp:
            yield self.download(f"models:/{name}/{version}", Path(tmp)) / "artifacts"

    def load_pyfunc(self, model_uri: str) -> Any:
        """A model (`models:/<name>/<version>`, `models:/<name>@<alias>`, `models:/<model_id>`)
        as an MLflow pyfunc, loaded from a copy downloaded from this store."""
        with tempfile.TemporaryDirectory() as tmp:
            return mlflow.pyfunc.load_model(str(self.download(model_uri, Path(tmp))))

    def register(self, model_uri: str, name: str, tags: dict[str, str] | None = None) -> str:
        """A new version of `name` (created on first use) from a `models:/<model_id>` URI, with
        its `tags` written in the same registry transaction: a version never exists untagged."""
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        model_id = model_uri.removeprefix("models:/")
        logged = self.client.get_logged_model(model_id)
        # the artifact location itself, not `models:/<id>`: MLflow's SQL registry resolves that
        # through the global tracking URI (its own TODO in SqlAlchemyStore.create_model_version)
        version = self.client.create_model_version(
            name,
            source=logged.artifact_location,
            run_id=logged.source_run_id,
            tags=tags,
            model_id=model_id,
        )
        return str(version.version)


@dataclass
class Run:
    """One run of a `Store`, logged through the store's client (the fluent names, run explicit)."""

    store: Store
    run_id: str
    experiment_id: str
    _client: MlflowClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = self.store.client

    def log_params(self, params: dict[str, Any]) -> None:
        self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = get_current_time_millis()
        self._client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()],
        )

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def set_tag(self, key: str, value: str) -> None:
        self._client.set_tag(self.run_id, key, value)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dictionary, artifact_file)

    def log_table(self, data: Any, artifact_file: str) -> None:
        self._client.log_table(self.run_id, data, artifact_file)

    def log_pyfunc(self, name: str, **save_kwargs: Any) -> str:
        """Save a pyfunc (`mlflow.pyfunc.save_model`'s arguments) as a logged model of this run;
        return its `models:/<model_id>` URI."""
        logged = self._client.create_logged_model(
            self.experiment_id, name=name, source_run_id=self.run_id
        )
        self._client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            description = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=self.run_id,
                model_id=logged.model_id,
            )
            mlflow.pyfunc.save_model(path=str(local), mlflow_model=description, **save_kwargs)
            self._client.log_model_artifacts(logged.model_id, str(local))
        self._client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return f"models:/{logged.model_id}"
