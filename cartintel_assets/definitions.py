"""The one code location of cartintel: each domain's assets, checks, jobs, schedules and sensors
(`defs/<domain>/definitions.py`), with the resources they share."""

import dagster as dg

from cartintel_assets.defs.abandonment import definitions as abandonment
from cartintel_assets.defs.friction import definitions as friction
from cartintel_assets.defs.ingestion import definitions as ingestion
from cartintel_assets.defs.ingestion.definitions import storefront_daily_job
from cartintel_assets.defs.monitoring import definitions as monitoring
from cartintel_assets.defs.privacy import definitions as privacy
from cartintel_assets.defs.registry import definitions as registry
from cartintel_assets.defs.reporting import definitions as reporting
from cartintel_assets.defs.uplift import definitions as uplift
from cartintel_assets.resources import LandingResource, WarehouseResource
from cartintel_assets.resources.engine import ComputeEngineResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource

__all__ = ["defs", "storefront_daily_job"]

defs = dg.Definitions.merge(
    ingestion.defs,
    abandonment.defs,
    friction.defs,
    uplift.defs,
    monitoring.defs,
    registry.defs,
    reporting.defs,
    privacy.defs,
    dg.Definitions(
        resources={
            "warehouse": WarehouseResource(),
            "landing": LandingResource(),
            "mlflow_tracking": MLflowResource(),
            "rollout": RolloutResource(),
            "engine": ComputeEngineResource(),
        }
    ),
)
