"""Friction drivers and review aggregates over all days so far, and customer segmentation."""

import dagster as dg

from cartintel_assets.defs.friction.assets import friction_analysis, review_aggregates
from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.segmentation.assets import segmentation

# Over all days so far (not partitioned): re-run after new days land.
friction_job = asset_job(
    "friction_job",
    dg.AssetSelection.assets(review_aggregates, friction_analysis),
    "Review signals per product and category, friction drivers and the friction"
    " index, over all labelled carts and landed reviews (after segmentation_job).",
)

segmentation_job = asset_job(
    "segmentation_job",
    dg.AssetSelection.assets(segmentation),
    "Re-segment customers on their recent behaviour; ids carry over from the last model.",
)

defs = dg.Definitions(
    assets=[review_aggregates, friction_analysis, segmentation],
    jobs=[friction_job, segmentation_job],
)
