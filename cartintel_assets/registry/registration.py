"""Log a risk model to MLflow as a pyfunc (calibrated probabilities) and register it by alias.

No Dagster import and no global MLflow state: every function is given the `Store` (or the `Run`)
it works in.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from cartintel_assets.models.abandonment import BoostedModel
from cartintel_assets.models.segmentation import SegmentationModel, evidence_frame
from cartintel_assets.models.uplift import UpliftModel
from cartintel_assets.registry.names import CHALLENGER, SEGMENTATION_MODEL
from cartintel_assets.registry.tracking import Run, Store
from cartintel_assets.settings import crash_point

# Pinned to the lock, passed explicitly (inference costs seconds and guesses both xgboost names).
PIP_REQUIREMENTS = ["xgboost-cpu==3.2.0", "scikit-learn==1.9.1", "pandas==2.3.3", "numpy==2.4.6"]


class RiskModelPyfunc(PythonModel):
    """Serves calibrated risk probabilities from a saved `BoostedModel`."""

    def load_context(self, context: Any) -> None:
        self.model = BoostedModel.load(Path(context.artifacts["risk_model"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        return self.model.predict_proba(model_input)


MODELS_FROM_CODE = Path(__file__).resolve().parent / "pyfunc_models"


def _log_pyfunc(
    run: Run,
    code: str,
    artifacts: dict[str, str],
    sample: pd.DataFrame,
    output: Any,
    model_config: dict[str, Any] | None = None,
) -> str:
    """Log a pyfunc from its code file (`pyfunc_models/<code>.py`) with its artifacts, signature
    and input example as a logged model of `run`."""
    return run.log_pyfunc(
        "model",
        python_model=str(MODELS_FROM_CODE / f"{code}.py"),
        artifacts=artifacts,
        model_config=model_config,
        signature=infer_signature(sample, output),
        input_example=sample,
        pip_requirements=PIP_REQUIREMENTS,
    )


def log_risk_model(run: Run, model: BoostedModel, example: pd.DataFrame) -> str:
    """Log the model in `run`; return its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "risk_model"
        model.save(folder)
        sample = model.typed(example.head(5))
        return _log_pyfunc(
            run, "risk_model", {"risk_model": str(folder)}, sample, model.predict_proba(sample)
        )


class SegmentationPyfunc(PythonModel):
    """Serves segment ids from a saved `SegmentationModel`, given customers' behaviour counts."""

    def load_context(self, context: Any) -> None:
        self.model = SegmentationModel.load(Path(context.artifacts["segmentation"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        return self.model.predict(model_input)


def log_segmentation_model(run: Run, model: SegmentationModel, example: pd.DataFrame) -> str:
    """Log the segmentation model in `run`; return its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segmentation.json"
        model.save(path)
        sample = evidence_frame(example.head(5).reset_index(drop=True))
        return _log_pyfunc(
            run, "segmentation_model", {"segmentation": str(path)}, sample, model.predict(sample)
        )


class UpliftPyfunc(PythonModel):
    """Serves, per cart, the chance of buying without intervention and, per arm, the effect on
    that chance (`<arm>`) and on expected margin (`margin_<arm>`, with the catalogue's costs and
    the margin rate the model was registered with)."""

    def load_context(self, context: Any) -> None:
        from cartintel_assets.decisions.catalogue import load_catalogue

        self.model = UpliftModel.load(Path(context.artifacts["uplift"]))
        self.catalogue = load_catalogue(context.artifacts["catalogue"])
        self.margin_rate = float(context.model_config["margin_rate"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return uplift_predictions(self.model, model_input, self.catalogue, self.margin_rate)


def uplift_predictions(
    model: UpliftModel, frame: pd.DataFrame, catalogue: list[Any], margin_rate: float
) -> pd.DataFrame:
    """Effects on conversion per arm, the baseline, and incremental margin per arm."""
    from cartintel_assets.decisions.economics import action_table

    effects = model.effects(frame).reset_index(drop=True)
    baseline = model.baseline(frame)
    margins = action_table(frame, baseline, effects, catalogue, margin_rate)
    wide = margins.pivot(index="cart", columns="arm", values="incremental_margin")
    out = effects.assign(p_baseline=baseline)
    for arm in effects.columns:
        out[f"margin_{arm}"] = wide[arm].to_numpy()
    return out


def log_uplift_model(
    run: Run, model: UpliftModel, example: pd.DataFrame, catalogue_path: str, margin_rate: float
) -> str:
    """Log the uplift model with its catalogue and margin rate in `run`; return its URI."""
    from cartintel_assets.decisions.catalogue import load_catalogue

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "uplift"
        model.save(folder)
        sample = model.outcome["control"].typed(example.head(5))
        output = uplift_predictions(model, sample, load_catalogue(catalogue_path), margin_rate)
        return _log_pyfunc(
            run,
            "uplift_model",
            {"uplift": str(folder), "catalogue": catalogue_path},
            sample,
            output,
            {"margin_rate": margin_rate},
        )


@dataclass(frozen=True)
class RegisteredUpliftModel:
    """An uplift model loaded by alias, with the arms its gate allows the plan to use."""

    model: UpliftModel
    name: str
    alias: str
    version: str
    run_id: str
    allowed_arms: list[str]
    trained_through: date | None  # the last day of the log it learned from (None: not tagged)


def load_uplift_model(store: Store, name: str, alias: str) -> RegisteredUpliftModel:
    """Resolve `alias` once, load that version and read its `allowed_arms` tag."""
    found = _by_alias(store, name, alias, "uplift_training_job")
    with store.version_artifacts(name, str(found.version)) as artifacts:
        model = UpliftModel.load(artifacts / "uplift")
    arms = [a for a in found.tags.get("allowed_arms", "").split(",") if a]
    through = found.tags.get("trained_through")
    return RegisteredUpliftModel(
        model,
        name,
        alias,
        str(found.version),
        str(found.run_id),
        arms,
        date.fromisoformat(through) if through else None,
    )


def _by_alias(store: Store, name: str, alias: str, trained_by: str) -> Any:
    """The model version an alias points at; a clear error naming the job when there is none."""
    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        raise LookupError(
            f"no version of the registered model {name!r} has the alias {alias!r}:"
            f" train one that passes its gates first ({trained_by})"
        ) from err


def load_segmentation_model(store: Store, name: str, alias: str) -> SegmentationModel | None:
    """The segmentation model an alias points at, or None when no version holds it."""
    version = version_by_alias(store, name, alias)
    if version is None:
        return None
    with store.version_artifacts(name, version) as artifacts:
        return SegmentationModel.load(artifacts / "segmentation.json")


def current_segmentation(store: Store) -> tuple[str | None, SegmentationModel | None]:
    """The latest segmentation (the version `challenger` points at) for the risk and uplift
    models to place shoppers with, and its version; (None, None) before the first."""
    return (
        version_by_alias(store, SEGMENTATION_MODEL, CHALLENGER),
        load_segmentation_model(store, SEGMENTATION_MODEL, CHALLENGER),
    )


def register(
    store: Store, model_uri: str, name: str, alias: str | None, tags: dict[str, str]
) -> str:
    """Register `model_uri` as a new version of `name` with its `tags` (one registry write) and,
    unless `alias` is None, then point `alias` at it. The alias comes last: a process killed in
    between leaves a tagged version that nothing serves or promotes (README "Crash safety")."""
    version = store.register(model_uri, name, tags)
    crash_point("registry.version_registered")
    if alias is not None:
        set_alias(store, name, alias, version)
    return version


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    """Point `alias` of `name` at `version`."""
    store.client.set_registered_model_alias(name, alias, version)


def version_by_alias(store: Store, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    try:
        return str(store.client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@dataclass(frozen=True)
class RegisteredRiskModel:
    """A risk model loaded from the registry, with the version an alias pointed at."""

    model: BoostedModel
    name: str
    alias: str
    version: str
    run_id: str


def load_risk_model_version(store: Store, name: str, version: str) -> BoostedModel:
    """One registered version's `BoostedModel`."""
    with store.version_artifacts(name, version) as artifacts:
        return BoostedModel.load(artifacts / "risk_model")


def load_risk_model(store: Store, name: str, alias: str) -> RegisteredRiskModel:
    """Resolve `alias` to a version once, then load exactly that version's `BoostedModel`."""
    found = _by_alias(store, name, alias, "abandonment_training_job")
    model = load_risk_model_version(store, name, str(found.version))
    return RegisteredRiskModel(model, name, alias, str(found.version), str(found.run_id))


def latest_version(store: Store, name: str) -> tuple[str, dict[str, str]] | None:
    """The newest registered version of `name` (whatever its gate) and its tags, or None."""
    try:
        found = store.client.search_model_versions(
            f"name = '{name}'", order_by=["version_number DESC"], max_results=1
        )
    except MlflowException:
        return None
    if not found:
        return None
    return str(found[0].version), dict(found[0].tags)
