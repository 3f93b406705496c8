"""Drift and realised performance of the served risk model, and the retraining sensor."""

import dagster as dg

from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.monitoring.assets import abandonment_drift, abandonment_performance
from cartintel_assets.defs.monitoring.sensors import abandonment_retraining_sensor

monitoring_job = asset_job(
    "monitoring_job",
    dg.AssetSelection.assets(abandonment_drift),
    "Drift of a scored day against the reference of the version that scored it (Evidently).",
)

# a day's outcomes are final 7 days later: run this for the day that just completed
performance_job = asset_job(
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


defs = dg.Definitions(
    assets=[abandonment_drift, abandonment_performance],
    jobs=[monitoring_job, performance_job],
    sensors=[abandonment_retraining_sensor],
    schedules=[
        # after the day's scores exist
        dg.build_schedule_from_partitioned_job(monitoring_job, hour_of_day=4, minute_of_hour=30),
        performance_schedule,
    ],
)
