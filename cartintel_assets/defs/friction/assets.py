"""The friction group: review signals (sentiment and friction aspects per review) and their
aggregates per product and category; friction drivers per segment, category and region; and the
category friction index."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.features.reviews import ASPECTS, aggregate_signals, day_review_signals
from cartintel_assets.models.plots import heatmap, markdown_image, markdown_table
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.warehouse.tables import (
    has_table,
    replace_partition,
    replace_table,
    require_tables,
)


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
        require_tables(con, "review_signals")
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
            replace_table(con, key, table, columns)
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


class FrictionDriversConfig(dg.Config):
    """How the drivers are estimated and which groups are too small to rank."""

    target: str = Field(default="harmful", description="Label the drivers explain.")
    min_support: int = Field(default=100, ge=10, description="Carts a scope needs to be ranked.")
    bootstraps: int = Field(default=50, ge=5, description="Resamples for the stability measure.")
    seed: int = Field(default=7, description="Random seed.")


@dg.multi_asset(
    group_name="friction",
    specs=[
        dg.AssetSpec(
            "friction_drivers",
            deps=["session_features", "abandonment_labels", "customer_segments", "raw_products"],
            kinds={"duckdb", "mlflow"},
            description="Per scope (global, segment, category, region) and feature: mean |SHAP|"
            " towards harmful abandonment, rank, friction rank, support and stability.",
        ),
        dg.AssetSpec(
            "friction_index",
            deps=["session_features", "abandonment_labels", "category_review_signals"],
            kinds={"duckdb"},
            description="Per category: harmful-abandonment lift, shipping and price friction,"
            " review complaints, and the friction index combining them.",
        ),
    ],
)
def friction_analysis(
    context: dg.AssetExecutionContext,
    config: FrictionDriversConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
) -> Iterator[dg.MaterializeResult]:
    """Which frictions (shipping cost, delivery time, price changes, promotions, reviews) drive
    harmful abandonment, for whom, where and in which categories."""
    from cartintel_assets.features.session_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from cartintel_assets.models.abandonment import XGBParams
    from cartintel_assets.models.friction import (
        driver_table,
        fit_driver_model,
        friction_index,
        labelled_carts,
    )

    with warehouse.reader() as con:
        require_tables(con, "session_features", "abandonment_labels", "customer_segments")
        carts = labelled_carts(con)
        reviews = (
            con.execute("SELECT * FROM category_review_signals").df()
            if has_table(con, "category_review_signals")
            else None
        )
    if len(carts) < 2 * config.min_support:
        from cartintel_assets.features.labels import why_no_final_label

        with warehouse.reader() as con:
            why = "" if len(carts) else f": {why_no_final_label(con)}"
        raise ValueError(
            f"{len(carts)} carts with a final label are too few for the friction analysis"
            f" (at least {2 * config.min_support}){why}"
        )
    model = fit_driver_model(
        carts,
        config.target,
        list(NUMERIC_FEATURES),
        list(CATEGORICAL_FEATURES),
        XGBParams(seed=config.seed),
    )
    scopes = {"global": None, "segment": "segment_name", "category": "category", "region": "region"}
    drivers = driver_table(carts, model, scopes, config.min_support, config.bootstraps, config.seed)
    index = friction_index(carts, reviews, "category", config.target, config.min_support)
    with warehouse.get_connection() as con:
        replace_table(con, "friction_drivers", drivers)
        replace_table(con, "friction_index", index)
    store = mlflow_tracking.store()
    with store.run(
        store.experiment_id("cartintel/friction"), mlflow_tracking.run_tags(context)
    ) as run:
        run.log_params({**config.model_dump(), "carts": len(carts)})
        run.log_table(drivers, "friction_drivers.json")
        run.log_table(index, "friction_index.json")
        by_segment = drivers[(drivers["scope_type"] == "segment") & drivers["friction"].notna()]
        grid = by_segment.pivot_table(index="scope", columns="feature", values="mean_abs_shap")
        figure = (
            heatmap(grid, "Friction drivers by segment (mean |SHAP|)", "mean |SHAP|")
            if not grid.empty
            else None
        )
        if figure is not None:
            run.log_figure(figure, "plots/friction_by_segment.png")
    plot = (
        markdown_image(figure, "friction by segment")
        if figure is not None
        else "no segment has enough carts to rank its drivers"
    )
    top = drivers[(drivers["friction_rank"] == 1)]
    ranked = drivers[drivers["note"].isna()]
    stability = ranked.groupby(["scope_type", "scope"])["stability"].first()
    yield dg.MaterializeResult(
        asset_key="friction_drivers",
        metadata={
            "dagster/row_count": len(drivers),
            "mlflow_run_id": run.run_id,
            "labelled_carts": len(carts),
            "top_friction_per_scope": dg.MetadataValue.md(
                markdown_table(
                    top,
                    [
                        "scope_type",
                        "scope",
                        "feature",
                        "mean_abs_shap",
                        "rank",
                        "support",
                        "stability",
                    ],
                    rows=40,
                )
            ),
            "min_stability": float(stability.min()),
            "friction_by_segment": dg.MetadataValue.md(plot),
            "scopes_below_support": int(drivers["note"].notna().sum()),
        },
    )
    yield dg.MaterializeResult(
        asset_key="friction_index",
        metadata={
            "dagster/row_count": len(index),
            "mlflow_run_id": run.run_id,
            "categories": dg.MetadataValue.md(
                markdown_table(
                    index,
                    [
                        "category",
                        "carts",
                        "friction_index",
                        "harmful_lift",
                        "shipping_share",
                        "price_rise",
                    ],
                )
            ),
        },
    )
