"""The abandonment-risk model: training (weekly or on request), scoring and their schedule."""

import dagster as dg

from cartintel_assets.defs.abandonment.assets import (
    abandonment_model,
    abandonment_scores,
    retraining_request,
)
from cartintel_assets.defs.jobs import asset_job

abandonment_training_job = asset_job(
    "abandonment_training_job",
    dg.AssetSelection.assets(abandonment_model),
    "Train, evaluate, gate and register the abandonment-risk model on all labelled carts.",
)

abandonment_scoring_job = asset_job(
    "abandonment_scoring_job",
    dg.AssetSelection.assets(abandonment_scores),
    "Score a day's open carts with the registered model by alias (reason codes, version).",
)

defs = dg.Definitions(
    assets=[abandonment_model, abandonment_scores, retraining_request],
    jobs=[abandonment_training_job, abandonment_scoring_job],
    sensors=[
        # evaluates the automation conditions (weekly or requested retraining, blocking-aware)
        dg.AutomationConditionSensorDefinition(
            "retraining_automation",
            target=dg.AssetSelection.assets(abandonment_model),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    schedules=[
        # after the day's features exist; scores with whichever version holds the alias then
        dg.build_schedule_from_partitioned_job(abandonment_scoring_job, hour_of_day=3),
    ],
)
