"""Ingestion, quality and features of one landed day: their assets, checks, job and schedule."""

import dagster as dg

from cartintel_assets.defs.features.assets import (
    abandonment_labels,
    cart_sessions,
    session_features,
)
from cartintel_assets.defs.friction.assets import review_signals
from cartintel_assets.defs.ingestion.assets import (
    ingestion_assets,
    landed_log_accounting,
    quality_gates,
)
from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.quality.assets import data_quality_scorecard

storefront_daily_job = asset_job(
    "storefront_daily_job",
    (
        dg.AssetSelection.groups("ingestion", "quality", "features")
        | dg.AssetSelection.assets(review_signals)
    )
    - dg.AssetSelection.assets(landed_log_accounting),
    "Ingest one landed day, gate it with the data-quality checks and build what follows.",
)

# Labels need the 7 days after a cart: re-run this once those days have landed.
abandonment_labels_job = asset_job(
    "abandonment_labels_job",
    dg.AssetSelection.assets(abandonment_labels),
    "Recompute the harmful/benign labels of a day once its 7-day window has landed.",
)

# A storefront that acts on the day's plan lands that day's interventions feed afterwards.
interventions_ingestion_job = asset_job(
    "interventions_ingestion_job",
    dg.AssetSelection.assets("raw_interventions", "quarantined_interventions")
    | dg.AssetSelection.assets(data_quality_scorecard),
    "Ingest a day's interventions feed again once the storefront has acted on its plan.",
)

# After `cartintel land-events` and the days' ingestion: every line of each landed log.
landing_accounting_job = asset_job(
    "landing_accounting_job",
    dg.AssetSelection.assets(landed_log_accounting),
    "Account for every line of each landed foreign log: accepted, quarantined or rejected.",
)

defs = dg.Definitions(
    assets=[
        *ingestion_assets,
        landed_log_accounting,
        data_quality_scorecard,
        cart_sessions,
        session_features,
        abandonment_labels,
        review_signals,
    ],
    asset_checks=quality_gates,
    jobs=[
        storefront_daily_job,
        abandonment_labels_job,
        interventions_ingestion_job,
        landing_accounting_job,
    ],
    schedules=[dg.build_schedule_from_partitioned_job(storefront_daily_job, hour_of_day=2)],
)
