"""Conformed session tables that features and labels start from."""

from datetime import date

import dagster as dg

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.ml.sessions import build_cart_sessions
from cartintel_assets.resources import WarehouseResource


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    deps=["raw_sessions", "raw_events"],
    kinds={"duckdb"},
)
def cart_sessions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Sessions that added to cart, with cart value and whether they bought in-session.

    Downstream of the blocking data-quality checks on raw_sessions and raw_events: a failed gate
    keeps bad data out of everything that learns from it.
    """
    with warehouse.get_connection() as con:
        stats = build_cart_sessions(con, date.fromisoformat(context.partition_key))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats["cart_sessions"],
            "abandonment_rate": stats["abandonment_rate"],
        }
    )
