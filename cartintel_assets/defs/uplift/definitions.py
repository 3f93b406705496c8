"""The uplift model and the daily intervention plan, with the plan's schedule."""

import dagster as dg

from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.uplift.assets import intervention_plan, uplift_model

uplift_training_job = asset_job(
    "uplift_training_job",
    dg.AssetSelection.assets(uplift_model),
    "Cross-fit, gate and register the multi-treatment uplift model on the intervention log.",
)

intervention_plan_job = asset_job(
    "intervention_plan_job",
    dg.AssetSelection.assets(intervention_plan),
    "Plan a day's interventions from its risk scores with the registered uplift model.",
)

defs = dg.Definitions(
    assets=[uplift_model, intervention_plan],
    jobs=[uplift_training_job, intervention_plan_job],
    # after the day's scores exist
    schedules=[dg.build_schedule_from_partitioned_job(intervention_plan_job, hour_of_day=4)],
)
