"""The executive dashboard, rebuilt each morning."""

import dagster as dg

from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.reporting.assets import executive_dashboard

reporting_job = asset_job(
    "reporting_job",
    dg.AssetSelection.assets(executive_dashboard),
    "Rebuild the executive dashboard from the latest scores, plan, friction, data quality and"
    " registry aliases.",
)


@dg.schedule(cron_schedule="0 5 * * *", job=reporting_job, execution_timezone="UTC")
def reporting_schedule() -> dg.RunRequest:
    """Each morning, once the day's scores, plan and drift checks exist."""
    return dg.RunRequest()


defs = dg.Definitions(
    assets=[executive_dashboard], jobs=[reporting_job], schedules=[reporting_schedule]
)
