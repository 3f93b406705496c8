"""Erasure of one data subject, as a job the UI launches (README "Privacy")."""

import dagster as dg

from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.privacy.assets import erasure_log

erasure_job = asset_job(
    "erasure_job",
    dg.AssetSelection.assets(erasure_log),
    "Erase one data subject (by pseudonym) from every store, with a signed receipt.",
)

defs = dg.Definitions(assets=[erasure_log], jobs=[erasure_job])
