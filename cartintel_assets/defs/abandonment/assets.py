"""The abandonment-risk model: trained on labelled point-in-time features, tracked and registered
in MLflow (`cartintel-abandonment`, alias `challenger`), gated by blocking checks; scored with
`pilot` in the pilot regions and `global` elsewhere."""

import hashlib
from dataclasses import asdict
from datetime import date
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.features.session_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from cartintel_assets.models.abandonment import (
    TRAINING_GATES,
    TrainingBounds,
    XGBParams,
    baseline_proba,
    fit_logistic_baseline,
    risk_metrics,
    time_split,
    training_gates,
)
from cartintel_assets.registry.names import ABANDONMENT_MODEL, CHALLENGER, GLOBAL
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.engine import ComputeEngineResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource
from cartintel_assets.warehouse.tables import replace_partition, require_tables

EXPERIMENT = "cartintel/abandonment"
GATES = TRAINING_GATES
_B = TrainingBounds()


class AbandonmentModelConfig(dg.Config):
    """Training target, hyperparameters and the gate's bounds."""

    target: str = Field(
        default="harmful", description="Label to predict: harmful (primary) or abandoned."
    )
    max_depth: int = Field(default=5, description="Tree depth.")
    learning_rate: float = Field(default=0.05, description="Shrinkage.")
    n_estimators: int = Field(
        default=600, description="Maximum boosting rounds (early stopping decides)."
    )
    early_stopping_rounds: int = Field(
        default=40, description="Rounds without validation gain before stopping."
    )
    seed: int = Field(default=7, description="Random seed.")
    min_roc_auc: float = Field(default=_B.min_roc_auc, description="Gate: minimum test ROC-AUC.")
    min_pr_auc: float = Field(default=_B.min_pr_auc, description="Gate: minimum test PR-AUC.")
    max_calibration_error: float = Field(
        default=_B.max_calibration_error, description="Gate: maximum expected calibration error."
    )
    global_tolerance: float = Field(
        default=_B.global_tolerance,
        description="Gate: allowed ROC-AUC shortfall vs the version serving as `global`.",
    )

    def bounds(self) -> TrainingBounds:
        return TrainingBounds(
            self.min_roc_auc, self.min_pr_auc, self.max_calibration_error, self.global_tolerance
        )


# Retrain weekly, or when the retraining sensor records a request (drift or realised performance
# failed and enough new labels exist), but never while the latest data-quality gate of any day
# it learns from has failed, even when that gate ran in another run (dagster #25112).
WEEKLY_RETRAINING_CRON = "0 5 * * 1"
_UPSTREAM_GATE_FAILED = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_checks_match(
            dg.AutomationCondition.check_failed(), blocking_only=True
        )
    )
).with_label("a blocking data-quality check upstream failed")
_RETRAINING_TRIGGER: dg.AutomationCondition = dg.AutomationCondition.cron_tick_passed(
    WEEKLY_RETRAINING_CRON
).with_label("weekly") | dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.newly_updated()
).allow(dg.AssetSelection.assets("retraining_request")).with_label("retraining requested")
RETRAINING_CONDITION = (
    _RETRAINING_TRIGGER.since_last_handled()
    & ~_UPSTREAM_GATE_FAILED
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("weekly or on request, upstream quality gates passed")

retraining_request = dg.AssetSpec(
    "retraining_request",
    group_name="monitoring",
    description="Recorded by `abandonment_retraining_sensor` when drift or realised performance"
    " failed and enough carts were labelled since the last training; its update triggers"
    " abandonment_model through the model's automation condition.",
)


@dg.asset(
    group_name="abandonment",
    deps=["session_features", "abandonment_labels", "customer_segments", "retraining_request"],
    kinds={"xgboost", "mlflow"},
    check_specs=[dg.AssetCheckSpec(g, asset="abandonment_model", blocking=True) for g in GATES],
    automation_condition=RETRAINING_CONDITION,
)
def abandonment_model(
    context: dg.AssetExecutionContext,
    config: AbandonmentModelConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    engine: ComputeEngineResource,
) -> Any:
    """Risk that an open cart is abandoned for good (harmful), scored before checkout.

    XGBoost on a time-based split (train / validation for early stopping and isotonic
    calibration / test), compared with a logistic baseline; every run is an MLflow run and every
    model a registered version of `cartintel-abandonment` with the alias `challenger`.
    """
    from cartintel_assets.models.abandonment import reason_codes
    from cartintel_assets.models.plots import evaluation_figures, markdown_image
    from cartintel_assets.models.segmentation import with_segment_features
    from cartintel_assets.monitoring.drift import (
        REFERENCE_DAYS,
        DriftOptions,
        reference_sample,
        store_reference,
        unstable_features,
    )
    from cartintel_assets.registry.registration import (
        current_segmentation,
        log_risk_model,
        register,
        set_alias,
        version_by_alias,
    )

    with warehouse.reader() as con:
        data = con.execute(
            "SELECT f.*, l.abandoned, l.harmful FROM session_features f JOIN abandonment_labels l"
            " USING (session_id) WHERE l.label_complete ORDER BY f.started_at, f.session_id"
        ).df()
    if data.empty:
        from cartintel_assets.features.labels import why_no_final_label

        with warehouse.reader() as con:
            raise ValueError(f"nothing to train on: {why_no_final_label(con)}")
    store = mlflow_tracking.store()
    # the shopper's segment as of the cart, from their earlier sessions (none before the first
    # segmentation)
    segmentation_version, segmentation = current_segmentation(store)
    data, segment_columns = with_segment_features(data, segmentation)
    split = time_split(data["started_at"])
    parts = {s: data[split == s] for s in ("train", "valid", "test")}
    ys = {s: parts[s][config.target].to_numpy(dtype=int) for s in parts}
    num, cat = [*NUMERIC_FEATURES, *segment_columns], list(CATEGORICAL_FEATURES)
    params = XGBParams(
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        n_estimators=config.n_estimators,
        early_stopping_rounds=config.early_stopping_rounds,
        seed=config.seed,
    )
    model = engine.fit_boosted_model(
        parts["train"], ys["train"], parts["valid"], ys["valid"], num, cat, params
    )
    model.segmentation = segmentation
    test = parts["test"]
    p = model.predict_proba(test)
    metrics = risk_metrics(ys["test"], p, test["cart_value"].to_numpy())
    baseline = fit_logistic_baseline(parts["train"], ys["train"], num)
    base_metrics = risk_metrics(ys["test"], baseline_proba(baseline, test, num))
    # the other label (abandoned in-session vs harmful), reported beside the primary model
    other = "abandoned" if config.target == "harmful" else "harmful"
    oy = {s: parts[s][other].to_numpy(dtype=int) for s in parts}
    other_model = engine.fit_boosted_model(
        parts["train"], oy["train"], parts["valid"], oy["valid"], num, cat, params
    )
    other_model.segmentation = segmentation
    other_metrics = risk_metrics(oy["test"], other_model.predict_proba(test))
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(data, index=False).values.tobytes()
    ).hexdigest()[:16]

    tags = {**mlflow_tracking.run_tags(context), "target": config.target}
    with store.run(store.experiment_id(EXPERIMENT), tags) as run:
        run.log_params({**asdict(params), "target": config.target, "features": len(model.features)})
        run.log_params(
            {
                "dataset_digest": digest,
                "test_from": str(test["started_at"].min().date()),
                "segmentation_version": segmentation_version or "none",
            }
        )
        run.log_metrics({f"rows_{s}": len(parts[s]) for s in parts})
        run.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        run.log_metrics({f"baseline_test_{k}": v for k, v in base_metrics.items()})
        run.log_metrics({f"{other}_test_{k}": v for k, v in other_metrics.items()})
        run.log_metric("best_iteration", model.best_iteration)
        sample = test.sample(min(len(test), 2000), random_state=0)
        figures = evaluation_figures(ys["test"], p, model.contributions(sample), model.features)
        for name, fig in figures.items():
            run.log_figure(fig, f"plots/{name}")
        model_uri = log_risk_model(run, model, test)
        incumbent = version_by_alias(store, ABANDONMENT_MODEL, GLOBAL)
        incumbent_auc = None
        if incumbent is not None:
            served = store.load_pyfunc(f"models:/{ABANDONMENT_MODEL}/{incumbent}")
            incumbent_auc = risk_metrics(ys["test"], np.asarray(served.predict(model.typed(test))))[
                "roc_auc"
            ]
            run.log_metric("global_test_roc_auc", incumbent_auc)
        gates = training_gates(metrics, incumbent_auc, config.bounds())
        gate = "passed" if all(g.passed for g in gates.values()) else "failed"
        run.set_tag("gate", gate)
        # the drift reference of this version, computed once: the latest landed days (not learnt
        # from) with their scores, and the features that already drift since its training window
        with warehouse.reader() as con:
            recent = con.execute(
                "SELECT * FROM session_features WHERE partition_date >"
                " (SELECT max(partition_date) FROM session_features) - ?::INTEGER",
                [REFERENCE_DAYS],
            ).df()
        recent = recent[~recent["session_id"].isin(data["session_id"])]
        if recent.empty:  # every landed day was learnt from: its test window is the best left
            recent = test
        reference = reference_sample(recent, model.predict_proba(recent))
        unstable = unstable_features(parts["train"], recent, DriftOptions())
        run.log_dict(unstable, "reference/unstable_features.json")
        # every run is a registered version (audit); only one that passes its gates becomes the
        # challenger, the one version eligible for promotion, once its drift reference is stored
        version = register(
            store,
            model_uri,
            ABANDONMENT_MODEL,
            None,
            {
                "gate": gate,
                "dagster.run_id": context.run.run_id,
                "test_from": str(test["started_at"].min()),
                "data_to": str(data["started_at"].max()),
                "labelled_carts": str(len(data)),
                "drift.unstable_features": ",".join(sorted(unstable)),
            },
        )
    with warehouse.get_connection() as con:
        store_reference(con, ABANDONMENT_MODEL, version, reference)
    if gate == "passed":
        set_alias(store, ABANDONMENT_MODEL, CHALLENGER, version)
    top_reasons = pd.Series([r[0] for r in reason_codes(model, sample) if r]).value_counts().head(5)
    yield dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.run_id,
            "model_version": version,
            "model_uri": f"models:/{ABANDONMENT_MODEL}/{version}",
            "tracking_uri": mlflow_tracking.uri(),
            "test_roc_auc": metrics["roc_auc"],
            "test_pr_auc": metrics["pr_auc"],
            "test_calibration_error": metrics["calibration_error"],
            "baseline_test_roc_auc": base_metrics["roc_auc"],
            f"{other}_test_roc_auc": other_metrics["roc_auc"],
            "top_decile_lift": metrics["top_decile_lift"],
            "rows": dg.MetadataValue.json({s: len(parts[s]) for s in parts}),
            "top_reason_codes": dg.MetadataValue.json(
                {str(k): int(v) for k, v in top_reasons.items()}
            ),
            "gate": gate,
            GLOBAL: f"version {incumbent}, test ROC-AUC {incumbent_auc:.4f} on the same days"
            if incumbent is not None and incumbent_auc is not None
            else "none: no version holds the alias global yet",
            "drift_reference": f"{len(reference)} carts of the latest {REFERENCE_DAYS} landed"
            f" days; not judged (drifted since the training window):"
            f" {', '.join(sorted(unstable)) or 'none'}",
            "alias": CHALLENGER if gate == "passed" else "none (gate failed)",
            "plots": dg.MetadataValue.md(
                "\n\n".join(markdown_image(f, n.removesuffix(".png")) for n, f in figures.items())
            ),
        }
    )
    for name, outcome in gates.items():
        yield dg.AssetCheckResult(
            check_name=name, passed=bool(outcome.passed), metadata=outcome.observed
        )


class AbandonmentScoresConfig(dg.Config):
    """Which registered model scores the carts, and how many reasons each score carries."""

    alias: str = Field(
        default="",
        description="Empty: by phase (`pilot` in the pilot regions, `global` elsewhere, the"
        " `challenger` before anything was promoted). An alias scores every cart with it.",
    )
    reason_codes: int = Field(default=3, ge=1, description="Reason codes per cart.")


@dg.asset(
    group_name="abandonment",
    partitions_def=daily_partitions,
    deps=["session_features", "abandonment_model"],
    kinds={"duckdb", "mlflow"},
)
def abandonment_scores(
    context: dg.AssetExecutionContext,
    config: AbandonmentScoresConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    rollout: RolloutResource,
) -> dg.MaterializeResult:
    """Risk of harmful abandonment for every open cart of the day, at its point-in-time cutoff,
    with the top reason codes (SHAP) and the registry version and alias that scored it on every
    row: `pilot` in the pilot regions, `global` elsewhere."""
    from cartintel_assets.models.plots import markdown_table
    from cartintel_assets.models.scoring import risk_deciles, score_carts, write_scores
    from cartintel_assets.registry.promotion import aliases
    from cartintel_assets.registry.registration import load_risk_model

    store = mlflow_tracking.store()
    plan = rollout.deployed().plan()
    available = set(aliases(store, ABANDONMENT_MODEL))
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        require_tables(con, "session_features")
        features = con.execute(
            "SELECT * FROM session_features WHERE partition_date = ? ORDER BY session_id", [day]
        ).df()
        if features.empty:
            context.log.warning(
                f"no session_features rows for {day}: no open carts that day, or the day's"
                " features are not materialised yet (run storefront_daily_job for it)"
            )
        serving = (
            pd.Series(config.alias, index=features.index)
            if config.alias
            else features["region"].map(lambda r: plan.serving_alias(str(r), available))
        )
        parts, served = [], {}
        for alias in sorted(set(serving)) or [plan.serving_alias("", available)]:
            registered = load_risk_model(store, ABANDONMENT_MODEL, alias)
            rows = features[serving == alias] if len(features) else features
            parts.append(
                score_carts(registered.model, rows, config.reason_codes).assign(
                    model_name=registered.name,
                    model_version=registered.version,
                    model_alias=registered.alias,
                    model_run_id=registered.run_id,
                )
            )
            served[alias] = {"version": registered.version, "carts": len(rows)}
        scores = pd.concat(parts, ignore_index=True).sort_values("session_id", ignore_index=True)
        if len(scores):  # deciles over the whole day, whichever version scored the cart
            scores["risk_decile"] = risk_deciles(scores["risk"].to_numpy())
        write_scores(con, scores, {"scored_by_run": context.run.run_id}, "_abandonment_scores")
        replace_partition(con, "abandonment_scores", "_abandonment_scores", day)
    n = len(scores)
    reasons = pd.Series([r[0] for r in scores.get("reason_codes", []) if len(r)]).value_counts()
    riskiest = scores.nlargest(10, "risk") if n else scores
    # no session id: run metadata outlives an erasure (contracts.SUBJECT_LINKED_COLUMNS)
    preview = markdown_table(riskiest, ["risk", "model_alias", "reason_codes"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "served_by": dg.MetadataValue.json(served),
            "pilot_regions": dg.MetadataValue.json(list(plan.pilot_regions)),
            "mean_risk": float(scores["risk"].mean()) if n else 0.0,
            "share_risk_above_0_5": float((scores["risk"] > 0.5).mean()) if n else 0.0,
            "top_reason_codes": dg.MetadataValue.json(
                {str(k): int(v) for k, v in reasons.head(8).items()}
            ),
            "riskiest_carts": dg.MetadataValue.md(preview),
        }
    )
