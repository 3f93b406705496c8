"""Promotion across the roadmap's phases: challenger -> pilot -> global, each move through its
gate, every move (and every refusal) appended to the promotion log, and rollback from the log."""

import json
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from cartintel_assets.registry.names import GLOBAL, PHASES, PILOT, PROMOTED_MODELS, UPLIFT_MODEL
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource

GATE_CHECK = "model_promotion_gate"


class PromotionConfig(dg.Config):
    """One move of one registered model."""

    model: Literal["abandonment", "uplift"] = Field(
        default="abandonment",
        description="Which model: abandonment (cartintel-abandonment, the risk model) or uplift"
        " (cartintel-uplift, the policy the plan and the service follow).",
    )
    action: Literal["promote", "rollback"] = Field(default="promote")
    phase: Literal["pilot", "global"] = Field(
        default="pilot",
        description="promote: the phase to move into (pilot takes the challenger, global takes"
        " the pilot). rollback: the phase whose previous version is restored.",
    )
    triggered_by: str = Field(default="dagster-ui", description="Who or what asked for the move.")


def _candidate_gate(con: Any, store: Any, name: str, phase: str, candidate: str, plan: Any) -> Any:
    """The gate of one move: blocking training checks, then the phase's own evidence."""
    from cartintel_assets.registry.promotion import (
        GateResult,
        compare_on_window,
        erasure_gate,
        held_out_window,
        judge_pilot,
        pilot_results,
    )
    from cartintel_assets.registry.registration import load_risk_model_version, version_by_alias

    tags = store.client.get_model_version(name, candidate).tags
    if tags.get("gate") != "passed":
        return GateResult(
            False,
            f"version {candidate} did not pass its blocking training checks"
            f" (gate {tags.get('gate', 'missing')})",
            {"gate": tags.get("gate")},
        )
    erased = erasure_gate(tags, plan)
    if erased is not None:
        return erased
    if name == UPLIFT_MODEL:
        return _policy_gate(con, store, phase, candidate, tags, plan)
    if phase == "pilot":
        incumbent = version_by_alias(store, name, GLOBAL)
        if incumbent is None:
            return GateResult(True, "first rollout: no global version to beat", {GLOBAL: None})
        window = held_out_window(con, tags["test_from"])
        if window.empty:
            return GateResult(False, "no labelled carts in the held-out window", {})
        cand = load_risk_model_version(store, name, candidate)
        inc = load_risk_model_version(store, name, incumbent)
        result = compare_on_window(
            window, cand.predict_proba(window), inc.predict_proba(window), plan
        )
        result.evidence["global_version"] = incumbent
        return result
    return judge_pilot(pilot_results(con, name, candidate), plan)


def _policy_gate(con: Any, store: Any, phase: str, candidate: str, tags: dict, plan: Any) -> Any:
    """The uplift policy's gate: off-policy against global to pilot, realised against the
    holdout in the pilot regions to global."""
    from cartintel_assets.decisions.economics import realised_margin
    from cartintel_assets.decisions.settings import PlanSettings
    from cartintel_assets.registry.promotion import (
        blocked_plan_days,
        judge_policy_candidate,
        judge_policy_pilot,
        policy_results,
    )
    from cartintel_assets.registry.registration import version_by_alias

    incumbent = version_by_alias(store, UPLIFT_MODEL, GLOBAL)
    if phase == "pilot":
        in_use = {GLOBAL: incumbent, PILOT: version_by_alias(store, UPLIFT_MODEL, PILOT)}
        return judge_policy_candidate(tags, in_use)
    settings = PlanSettings().deployed()
    results = policy_results(con)
    realised = realised_margin(results, settings.catalogue(), settings.margin_rate)
    blocked = blocked_plan_days(con, candidate, list(plan.pilot_regions))
    return judge_policy_pilot(results, realised, candidate, incumbent, plan, blocked)


@dg.asset(
    group_name="registry",
    kinds={"mlflow", "duckdb"},
    check_specs=[dg.AssetCheckSpec(GATE_CHECK, asset="model_promotions", blocking=True)],
)
def model_promotions(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    rollout: RolloutResource,
) -> Any:
    """The append-only promotion log (`promotion_log`): each materialisation is one requested
    move of a registered model between phases, with its gate's evidence, whether the alias moved,
    who asked and the Dagster run. MLflow keeps no alias history; this log is the history."""
    from cartintel_assets.models.plots import markdown_table
    from cartintel_assets.registry.promotion import (
        GateResult,
        Move,
        aliases,
        erasure_gate,
        previous_version,
        read_log,
        reconcile,
        record,
    )
    from cartintel_assets.registry.registration import version_by_alias

    name = PROMOTED_MODELS[config.model]
    store = mlflow_tracking.store()
    plan = rollout.deployed().plan()
    phase = config.phase
    with warehouse.get_connection() as con:
        # a move whose process died after its log row and before its alias is finished first
        for done in reconcile(con, store, name):
            context.log.warning(
                f"the registry was behind the promotion log: {done.phase} now points at version"
                f" {done.to_version}, as logged at {done.logged_at} by Dagster run"
                f" {done.dagster_run_id}"
            )
        current = version_by_alias(store, name, phase)
        if config.action == "promote":
            source = PHASES[PHASES.index(phase) - 1]
            target = version_by_alias(store, name, source)
            if target is None:
                gate = GateResult(False, f"no version of {name} holds {source!r} to promote", {})
            elif target == current:
                gate = GateResult(False, f"version {target} already holds {phase!r}", {})
            else:
                gate = _candidate_gate(con, store, name, phase, target, plan)
        else:
            target = previous_version(con, store, name, phase)
            if target is None:
                gate = GateResult(
                    False,
                    f"the promotion log has no version that held {phase!r} before"
                    f" version {current}",
                    {},
                )
            else:  # a rollback may not bring back rows erased since, past the grace period
                erased = erasure_gate(store.client.get_model_version(name, target).tags, plan)
                gate = erased or GateResult(
                    True, f"restores version {target}, which {phase!r} held before", {}
                )
        move = Move(
            model_name=name,
            phase=phase,
            action=config.action,
            outcome="moved" if gate.passed else "refused",
            from_version=current,
            to_version=target,
            triggered_by=config.triggered_by,
            reason=gate.reason,
            evidence=gate.evidence,
            dagster_run_id=context.run.run_id,
        )
        record(con, store, move)
        log = read_log(con, name)
    context.log.info(f"{config.action} {name} to {phase}: {move.outcome} ({gate.reason})")
    shown = log.tail(10)[
        ["logged_at", "phase", "action", "outcome", "from_version", "to_version", "reason"]
    ]
    yield dg.MaterializeResult(
        metadata={
            "model": name,
            "action": config.action,
            "phase": phase,
            "outcome": move.outcome,
            "from_version": current or "none",
            "to_version": target or "none",
            "reason": gate.reason,
            "evidence": dg.MetadataValue.json(json.loads(move.row()["evidence"])),
            "triggered_by": config.triggered_by,
            "aliases_now": dg.MetadataValue.json(aliases(store, name)),
            "log_rows": len(log),
            "recent_moves": dg.MetadataValue.md(markdown_table(shown, list(shown.columns))),
        }
    )
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=gate.passed,
        metadata={"reason": gate.reason, "outcome": move.outcome},
    )
