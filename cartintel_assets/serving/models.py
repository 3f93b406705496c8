"""The registry versions the service scores with: the risk and uplift versions each serving alias
points at and the `challenger` for shadow scoring, resolved once and swapped whole when an alias
moves."""

from __future__ import annotations

from dataclasses import dataclass

from cartintel_assets.registry.names import ABANDONMENT_MODEL, CHALLENGER, PHASES, UPLIFT_MODEL
from cartintel_assets.registry.registration import (
    RegisteredRiskModel,
    RegisteredUpliftModel,
    load_risk_model,
    load_uplift_model,
    version_by_alias,
)
from cartintel_assets.registry.tracking import Store


@dataclass(frozen=True)
class Models:
    """The registry versions one decision uses, resolved together."""

    risk: dict[str, RegisteredRiskModel]  # by alias
    # by alias: a cart's region picks one as for the risk model (`PhasePlan.serving_alias`)
    uplift: dict[str, RegisteredUpliftModel]
    shadow: RegisteredRiskModel | None


def registry_state(store: Store) -> dict[str, str | None]:
    """Which version each alias the service reads points at now (None: no such alias)."""
    return {
        f"{name}@{a}": version_by_alias(store, name, a)
        for name in (ABANDONMENT_MODEL, UPLIFT_MODEL)
        for a in PHASES
    }


def load_models(store: Store, state: dict[str, str | None], shadow: bool) -> Models:
    """Load the risk and uplift versions of every alias in `state`."""
    risk = {
        a: load_risk_model(store, ABANDONMENT_MODEL, a)
        for a in PHASES
        if state.get(f"{ABANDONMENT_MODEL}@{a}")
    }
    if not risk:
        raise LookupError(
            f"no version of {ABANDONMENT_MODEL} holds an alias yet: train one (abandonment_training_job)"
        )
    for m in risk.values():  # one thread per model: the service runs one worker per core
        m.model.booster.set_param({"nthread": 1})
        # compiled now: a first request should not wait for them
        m.model.trees  # noqa: B018
        m.model.shap_tables  # noqa: B018
    uplift = {
        a: load_uplift_model(store, UPLIFT_MODEL, a)
        for a in PHASES
        if state.get(f"{UPLIFT_MODEL}@{a}")
    }
    for u in uplift.values():
        u.model.use_threads(1)
    return Models(risk, uplift, risk.get(CHALLENGER) if shadow else None)
