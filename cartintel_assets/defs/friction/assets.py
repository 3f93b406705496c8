"""Review signals (sentiment and friction aspects per review) and their aggregates per product
and category: the review side of the friction analysis."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.ml.plots import markdown_table
from cartintel_assets.ml.reviews import ASPECTS, aggregate_signals, day_review_signals
from cartintel_assets.ml.warehouse import has_table, replace_partition, typed_temp_table
from cartintel_assets.resources import WarehouseResource


@dg.asset(
    group_name="friction",
    partitions_def=daily_partitions,
    deps=["raw_reviews", "raw_products"],
    kinds={"duckdb"},
)
def review_signals(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per review of the day: sentiment in [-1, 1] (VADER, sentence-averaged, offline lexicon)
    and, per friction aspect (shipping, price, size/fit, quality, returns, service), whether the
    review mentions it and whether it complains about it."""
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        frame = day_review_signals(con, day, "_review_signals")
        replace_partition(con, "review_signals", "_review_signals", day)
    n = len(frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "mean_sentiment": float(frame["sentiment"].mean()) if n else 0.0,
            "aspect_mentions": dg.MetadataValue.json(
                {a: int(frame[f"aspect_{a}"].sum()) for a in ASPECTS}
            ),
            "aspect_complaints": dg.MetadataValue.json(
                {a: int(frame[f"negative_{a}"].sum()) for a in ASPECTS}
            ),
        }
    )


class ReviewAggregatesConfig(dg.Config):
    min_reviews: int = Field(
        default=3, ge=1, description="Reviews a product or category needs to be listed."
    )


@dg.multi_asset(
    group_name="friction",
    specs=[
        dg.AssetSpec("product_review_signals", deps=["review_signals"], kinds={"duckdb"}),
        dg.AssetSpec("category_review_signals", deps=["review_signals"], kinds={"duckdb"}),
    ],
)
def review_aggregates(
    config: ReviewAggregatesConfig, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    """Per product and per category, over all reviews so far: review count, mean rating and
    sentiment, share of negative reviews, and per aspect the share of reviews mentioning it and
    complaining about it. Groups with fewer than `min_reviews` reviews are left out."""
    with warehouse.get_connection() as con:
        if not has_table(con, "review_signals"):
            raise ValueError("no review_signals yet: materialise that asset first")
        signals = con.execute("SELECT * FROM review_signals").df()
        for key, by in (
            ("product_review_signals", ["product_id", "category"]),
            ("category_review_signals", ["category"]),
        ):
            table = aggregate_signals(signals, by, config.min_reviews)
            table = table.sort_values(["negative_share", "reviews"], ascending=[False, False])
            columns = {c: "VARCHAR" for c in by} | {
                c: ("BIGINT" if c == "reviews" else "DOUBLE") for c in table.columns if c not in by
            }
            typed_temp_table(con, table, columns, "_review_aggregate")
            con.execute(f"CREATE OR REPLACE TABLE {key} AS SELECT * FROM _review_aggregate")
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/row_count": len(table),
                    "reviews": int(table["reviews"].sum()),
                    "most_negative": dg.MetadataValue.md(
                        markdown_table(
                            table,
                            [
                                *by,
                                "reviews",
                                "mean_rating",
                                "negative_share",
                                "share_negative_shipping",
                            ],
                        )
                    ),
                },
            )
