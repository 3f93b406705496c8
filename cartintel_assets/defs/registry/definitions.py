"""Promotion and rollback across the roadmap's phases, as jobs the UI launches."""

import dagster as dg

from cartintel_assets.defs.jobs import asset_job
from cartintel_assets.defs.registry.assets import PromotionConfig, model_promotions
from cartintel_assets.registry.names import GLOBAL, PILOT


def _promotion_config(action: str, phase: str) -> dict:
    move = PromotionConfig(action=action, phase=phase)  # type: ignore[arg-type]
    return {"ops": {"model_promotions": {"config": move.model_dump()}}}


promote_model_job = asset_job(
    "promote_model_job",
    dg.AssetSelection.assets(model_promotions),
    "Move a model to the next phase (challenger -> pilot -> global) through its gate.",
    _promotion_config("promote", PILOT),
)

rollback_model_job = asset_job(
    "rollback_model_job",
    dg.AssetSelection.assets(model_promotions),
    "Restore the version a phase held before its latest promotion (from the promotion log).",
    _promotion_config("rollback", GLOBAL),
)

defs = dg.Definitions(assets=[model_promotions], jobs=[promote_model_job, rollback_model_job])
