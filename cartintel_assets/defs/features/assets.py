"""Conformed session tables, point-in-time features and outcome labels of cart sessions."""

from datetime import date

import dagster as dg
from pydantic import Field

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.features.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    CutoffPolicy,
)
from cartintel_assets.features.sessions import build_cart_sessions
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.engine import ComputeEngineResource
from cartintel_assets.warehouse.tables import replace_partition


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


class SessionFeaturesConfig(dg.Config):
    """When a cart is scored, and how far back customer history reaches."""

    minutes_after_first_cart: float = Field(
        default=10.0,
        description="Cutoff: checkout start, or this many minutes after the first add-to-cart if earlier.",
    )
    history_days: int = Field(
        default=365, description="Days of earlier sessions used for customer history."
    )


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    deps=["raw_sessions", "raw_events", "raw_products", "raw_shipping_quotes", "raw_reviews"],
    kinds={"duckdb"},
)
def session_features(
    context: dg.AssetExecutionContext,
    config: SessionFeaturesConfig,
    warehouse: WarehouseResource,
    engine: ComputeEngineResource,
) -> dg.MaterializeResult:
    """What the shop knows about each open cart at the moment it could act (point in time).

    Behaviour, friction (price vs 30-day median, shipping share, delivery days, reviews), context
    and customer history, from events strictly before the cutoff and data of earlier days only.
    """
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        frame = engine.day_features(
            con, day, CutoffPolicy(config.minutes_after_first_cart), config.history_days
        )
        replace_partition(con, "session_features", "_session_features", day)
    coverage = {c: float(frame[c].notna().mean()) if len(frame) else 0.0 for c in NUMERIC_FEATURES}
    # what the landed data cannot supply (a bare event log: no shipping, reviews, device, ...):
    # missing values the models train without, never zeros
    unknown = (
        frame[list(CATEGORICAL_FEATURES)].isin(["unknown"])
        | frame[list(CATEGORICAL_FEATURES)].isna()
    )
    unavailable = [c for c, share in coverage.items() if len(frame) and share == 0.0] + [
        c for c in CATEGORICAL_FEATURES if len(frame) and bool(unknown[c].all())
    ]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "unavailable_features": dg.MetadataValue.json(unavailable),
            "features": dg.MetadataValue.json(list(NUMERIC_FEATURES + CATEGORICAL_FEATURES)),
            "non_null_share": dg.MetadataValue.json(coverage),
            "mean_cart_value": float(frame["cart_value"].mean()) if len(frame) else 0.0,
        }
    )


@dg.asset(
    group_name="features",
    partitions_def=daily_partitions,
    deps=[
        dg.AssetDep(
            "raw_sessions",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=RETURN_WINDOW_DAYS
            ),
        ),
        dg.AssetDep(
            "raw_events",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=RETURN_WINDOW_DAYS
            ),
        ),
    ],
    kinds={"duckdb"},
)
def abandonment_labels(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Whether each cart of the day was abandoned, and whether that was harmful (no purchase of
    the cart within 7 days) or benign (the customer came back and bought it).

    Final only once the 7 following days have landed (`label_complete`); re-materialise then.
    """
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        frame = cart_labels(con, day)
        replace_partition(con, "abandonment_labels", "_cart_labels", day)
    n = len(frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "abandonment_rate": float(frame["abandoned"].mean()) if n else 0.0,
            "harmful_rate": float(frame["harmful"].mean()) if n else 0.0,
            "benign_share_of_abandoned": float(frame.loc[frame["abandoned"], "benign"].mean())
            if frame["abandoned"].any()
            else 0.0,
            "label_complete": bool(frame["label_complete"].all()) if n else False,
        }
    )
