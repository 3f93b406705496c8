"""The one code location of cartintel: every asset, check, job and resource."""

import dagster as dg

from cartintel_assets.defs.abandonment.assets import (
    abandonment_model,
    abandonment_scores,
    retraining_request,
)
from cartintel_assets.defs.features.assets import (
    abandonment_labels,
    cart_sessions,
    session_features,
)
from cartintel_assets.defs.friction.assets import (
    friction_analysis,
    review_aggregates,
    review_signals,
)
from cartintel_assets.defs.ingestion.assets import ingestion_assets, quality_gates
from cartintel_assets.defs.monitoring.assets import abandonment_drift, abandonment_performance
from cartintel_assets.defs.monitoring.sensors import abandonment_retraining_sensor
from cartintel_assets.defs.quality.assets import data_quality_scorecard
from cartintel_assets.defs.registry.assets import PromotionConfig, model_promotions
from cartintel_assets.defs.reporting.assets import executive_dashboard
from cartintel_assets.defs.segmentation.assets import segmentation
from cartintel_assets.defs.uplift.assets import intervention_plan, uplift_model
from cartintel_assets.registry.names import GLOBAL, PILOT
from cartintel_assets.resources import LandingResource, WarehouseResource
from cartintel_assets.resources.engine import ComputeEngineResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource


def _job(
    name: str,
    selection: dg.AssetSelection,
    description: str,
    config: dict | None = None,
) -> "dg.UnresolvedAssetJobDefinition":
    # In-process: a step per process would re-import the stack (~8.5 s a step) and DuckDB takes
    # one writer at a time anyway.
    return dg.define_asset_job(
        name,
        selection=selection,
        executor_def=dg.in_process_executor,
        description=description,
        config=config,
    )


storefront_daily_job = _job(
    "storefront_daily_job",
    dg.AssetSelection.groups("ingestion", "quality", "features")
    | dg.AssetSelection.assets(review_signals),
    "Ingest one landed day, gate it with the data-quality checks and build what follows.",
)

# Labels need the 7 days after a cart: re-run this once those days have landed.
abandonment_labels_job = _job(
    "abandonment_labels_job",
    dg.AssetSelection.assets(abandonment_labels),
    "Recompute the harmful/benign labels of a day once its 7-day window has landed.",
)

abandonment_training_job = _job(
    "abandonment_training_job",
    dg.AssetSelection.assets(abandonment_model),
    "Train, evaluate, gate and register the abandonment-risk model on all labelled carts.",
)

abandonment_scoring_job = _job(
    "abandonment_scoring_job",
    dg.AssetSelection.assets(abandonment_scores),
    "Score a day's open carts with the registered model by alias (reason codes, version).",
)

# Over all days so far (not partitioned): re-run after new days land.
friction_job = _job(
    "friction_job",
    dg.AssetSelection.assets(review_aggregates, friction_analysis),
    "Review signals per product and category, friction drivers and the friction"
    " index, over all labelled carts and landed reviews (after segmentation_job).",
)

segmentation_job = _job(
    "segmentation_job",
    dg.AssetSelection.assets(segmentation),
    "Re-segment customers on their recent behaviour; ids carry over from the last model.",
)

uplift_training_job = _job(
    "uplift_training_job",
    dg.AssetSelection.assets(uplift_model),
    "Cross-fit, gate and register the multi-treatment uplift model on the intervention log.",
)

intervention_plan_job = _job(
    "intervention_plan_job",
    dg.AssetSelection.assets(intervention_plan),
    "Plan a day's interventions from its risk scores with the registered uplift model.",
)

monitoring_job = _job(
    "monitoring_job",
    dg.AssetSelection.assets(abandonment_drift),
    "Drift of a scored day against the reference of the version that scored it (Evidently).",
)

# a day's outcomes are final 7 days later: run this for the day that just completed
performance_job = _job(
    "performance_job",
    dg.AssetSelection.assets(abandonment_performance),
    "Realised ROC-AUC and calibration of a scored day once its outcomes are final.",
)


@dg.schedule(cron_schedule="45 4 * * *", job=performance_job, execution_timezone="UTC")
def performance_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Each morning, the realised performance of the day whose 7-day outcomes just became final
    (that day's labels are recomputed by abandonment_labels_job once its window has landed)."""
    from datetime import timedelta

    from cartintel_assets.features.labels import RETURN_WINDOW_DAYS

    day = context.scheduled_execution_time.date() - timedelta(days=RETURN_WINDOW_DAYS + 1)
    return dg.RunRequest(partition_key=day.isoformat())


reporting_job = _job(
    "reporting_job",
    dg.AssetSelection.assets(executive_dashboard),
    "Rebuild the executive dashboard from the latest scores, plan, friction, data quality and"
    " registry aliases.",
)


@dg.schedule(cron_schedule="0 5 * * *", job=reporting_job, execution_timezone="UTC")
def reporting_schedule() -> dg.RunRequest:
    """Each morning, once the day's scores, plan and drift checks exist."""
    return dg.RunRequest()


def _promotion_config(action: str, phase: str) -> dict:
    move = PromotionConfig(action=action, phase=phase)  # type: ignore[arg-type]
    return {"ops": {"model_promotions": {"config": move.model_dump()}}}


promote_model_job = _job(
    "promote_model_job",
    dg.AssetSelection.assets(model_promotions),
    "Move a model to the next phase (challenger -> pilot -> global) through its gate.",
    _promotion_config("promote", PILOT),
)

rollback_model_job = _job(
    "rollback_model_job",
    dg.AssetSelection.assets(model_promotions),
    "Restore the version a phase held before its latest promotion (from the promotion log).",
    _promotion_config("rollback", GLOBAL),
)

defs = dg.Definitions(
    assets=[
        *ingestion_assets,
        data_quality_scorecard,
        cart_sessions,
        session_features,
        abandonment_labels,
        abandonment_model,
        abandonment_scores,
        review_signals,
        review_aggregates,
        segmentation,
        friction_analysis,
        uplift_model,
        intervention_plan,
        retraining_request,
        abandonment_drift,
        abandonment_performance,
        model_promotions,
        executive_dashboard,
    ],
    asset_checks=quality_gates,
    jobs=[
        storefront_daily_job,
        abandonment_labels_job,
        abandonment_training_job,
        abandonment_scoring_job,
        friction_job,
        segmentation_job,
        uplift_training_job,
        intervention_plan_job,
        monitoring_job,
        performance_job,
        promote_model_job,
        rollback_model_job,
        reporting_job,
    ],
    sensors=[
        abandonment_retraining_sensor,
        # evaluates the automation conditions (weekly or requested retraining, blocking-aware)
        dg.AutomationConditionSensorDefinition(
            "retraining_automation",
            target=dg.AssetSelection.assets(abandonment_model),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    schedules=[
        dg.build_schedule_from_partitioned_job(storefront_daily_job, hour_of_day=2),
        # after the day's features exist; scores with whichever version holds the alias then
        dg.build_schedule_from_partitioned_job(abandonment_scoring_job, hour_of_day=3),
        # after the day's scores exist
        dg.build_schedule_from_partitioned_job(intervention_plan_job, hour_of_day=4),
        # after the day's scores exist
        dg.build_schedule_from_partitioned_job(monitoring_job, hour_of_day=4, minute_of_hour=30),
        performance_schedule,
        reporting_schedule,
    ],
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingResource(),
        "mlflow_tracking": MLflowResource(),
        "rollout": RolloutResource(),
        "engine": ComputeEngineResource(),
    },
)
