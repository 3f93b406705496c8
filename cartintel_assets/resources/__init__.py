"""Dagster resources: the warehouse and the landing zone."""

from cartintel_assets.resources.landing import LandingResource
from cartintel_assets.resources.warehouse import WarehouseResource

__all__ = ["LandingResource", "WarehouseResource"]
