"""Behavioural segments of customers: a latent-class model tracked and registered in MLflow
(`cartintel-segmentation`), segment ids stable across retrains, assignments in the warehouse."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from cartintel_assets.models.plots import heatmap, markdown_image, markdown_table
from cartintel_assets.models.segmentation import PROFILE_COLUMNS, customer_behaviour
from cartintel_assets.registry.names import CHALLENGER, SEGMENTATION_MODEL
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.warehouse.tables import (
    replace_rows,
    replace_table,
    require_tables,
    typed_temp_table,
)

EXPERIMENT = "cartintel/segmentation"

ASSIGNMENT_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "segment_id": "INTEGER",
    "segment_name": "VARCHAR",
    "probability": "DOUBLE",
    "sessions": "BIGINT",
    "model_version": "VARCHAR",
    "as_of": "DATE",
}
PROFILE_TABLE_COLUMNS: dict[str, str] = {
    "model_version": "VARCHAR",
    "segment_id": "INTEGER",
    "segment_name": "VARCHAR",
    "share": "DOUBLE",
    **dict.fromkeys(PROFILE_COLUMNS, "DOUBLE"),
    "previous_segment_id": "INTEGER",
    "match_distance": "DOUBLE",
    "match_status": "VARCHAR",
    "as_of": "DATE",
}


class SegmentationConfig(dg.Config):
    """Which history the segments learn from and how many there may be."""

    history_days: int = Field(
        default=90, ge=7, description="Days of behaviour, ending at the latest landed day."
    )
    min_segments: int = Field(default=3, ge=2, description="Fewest segments considered.")
    max_segments: int = Field(default=8, ge=2, description="Most segments considered.")
    restarts: int = Field(default=4, ge=1, description="EM restarts per number of segments.")
    seed: int = Field(default=7, description="Random seed.")
    match_distance: float = Field(
        default=3.0, description="Largest signature distance at which a segment keeps its id."
    )


@dg.multi_asset(
    group_name="segmentation",
    specs=[
        dg.AssetSpec(
            "customer_segments",
            deps=["raw_sessions", "raw_events", "raw_products", "abandonment_labels"],
            kinds={"duckdb", "mlflow"},
            description="Each customer's behavioural segment (id, profile name, probability).",
        ),
        dg.AssetSpec(
            "segment_profiles",
            deps=["raw_sessions", "raw_events", "raw_products", "abandonment_labels"],
            kinds={"duckdb"},
            description="Per model version and segment: the profile behind its name, its share"
            " and how it matched the previous model's segments.",
        ),
    ],
)
def segmentation(
    context: dg.AssetExecutionContext,
    config: SegmentationConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
) -> Iterator[dg.MaterializeResult]:
    """Segments shoppers by browsing and decision pattern with a latent-class model over their
    behaviour counts (number of segments by ICL within the configured range), names each segment
    from its parameters and keeps ids stable by matching the previous model's segments."""
    from cartintel_assets.models.segmentation import align_segments, fit_segmentation
    from cartintel_assets.registry.registration import (
        load_segmentation_model,
        log_segmentation_model,
        register,
    )

    with warehouse.reader() as con:
        require_tables(con, "raw_sessions", "abandonment_labels")
        end = con.execute("SELECT max(partition_date) FROM raw_sessions").fetchone()[0]  # type: ignore[index]
        start = end - timedelta(days=config.history_days - 1)
        counts = customer_behaviour(con, start, end)
    model = fit_segmentation(
        counts, config.min_segments, config.max_segments, config.restarts, config.seed
    )
    store = mlflow_tracking.store()
    previous = load_segmentation_model(store, SEGMENTATION_MODEL, CHALLENGER)
    report = align_segments(model, previous, config.match_distance)
    proba = model.predict_proba(counts)
    tags = mlflow_tracking.run_tags(context)
    profiles = model.profiles().merge(
        report[["segment_id", "previous_segment_id", "distance", "status"]], on="segment_id"
    )
    with store.run(store.experiment_id(EXPERIMENT), tags) as run:
        run.log_params(
            {
                "history_days": config.history_days,
                "from": str(start),
                "to": str(end),
                "k_range": f"{config.min_segments}-{config.max_segments}",
                "criterion": "ICL",
                "restarts": config.restarts,
                "seed": config.seed,
            }
        )
        run.log_metrics({"customers": len(counts), "segments": model.k})
        for row in model.selection:
            run.log_metrics({"icl": row["icl"], "bic": row["bic"]}, step=int(row["k"]))
        run.log_table(profiles, "segment_profiles.json")
        run.log_table(report, "segment_matches.json")
        shown_profiles = profiles.set_index("segment_name")[list(PROFILE_COLUMNS)]
        z = (shown_profiles - shown_profiles.mean()) / shown_profiles.std(ddof=0).replace(0, 1)
        figure = heatmap(z, "Segment profiles (z-score per column)", "z-score")
        run.log_figure(figure, "plots/segment_profiles.png")
        model_uri = log_segmentation_model(run, model, counts)
        version = register(
            store, model_uri, SEGMENTATION_MODEL, CHALLENGER, {"dagster.run_id": context.run.run_id}
        )
    ids = model.predict(counts)
    name_of = dict(zip(model.segment_ids, model.names, strict=True))
    assignments = pd.DataFrame(
        {
            "customer_id": counts["customer_id"],
            "segment_id": ids,
            "segment_name": [name_of[i] for i in ids],
            "probability": proba.max(axis=1),
            "sessions": counts["n_sessions"],
            "model_version": version,
            "as_of": end,
        }
    )
    profile_rows = profiles.rename(columns={"distance": "match_distance", "status": "match_status"})
    profile_rows = profile_rows.assign(model_version=version, as_of=end)
    with warehouse.get_connection() as con:
        replace_table(con, "customer_segments", assignments, ASSIGNMENT_COLUMNS)
        typed_temp_table(con, profile_rows, PROFILE_TABLE_COLUMNS, "_segment_profiles")
        con.execute(
            "CREATE TABLE IF NOT EXISTS segment_profiles AS SELECT * FROM _segment_profiles LIMIT 0"
        )
        replace_rows(
            con,
            "segment_profiles",
            con.table("_segment_profiles").df(),
            "model_version = ?",
            [version],
        )
    shown = ["segment_id", "segment_name", "share", *PROFILE_COLUMNS]
    common: dict[str, Any] = {
        "mlflow_run_id": run.run_id,
        "model_version": version,
        "model_uri": f"models:/{SEGMENTATION_MODEL}/{version}",
    }
    yield dg.MaterializeResult(
        asset_key="customer_segments",
        metadata={
            **common,
            "dagster/row_count": len(assignments),
            "segments": model.k,
            "criterion": "ICL (BIC + 2 x classification entropy), lowest wins",
            "selection": dg.MetadataValue.md(
                markdown_table(pd.DataFrame(model.selection), ["k", "log_likelihood", "bic", "icl"])
            ),
            "customers_per_segment": dg.MetadataValue.json(
                {str(k): int(v) for k, v in assignments["segment_name"].value_counts().items()}
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key="segment_profiles",
        metadata={
            **common,
            "dagster/row_count": len(profiles),
            "profiles": dg.MetadataValue.md(markdown_table(profiles, shown)),
            "profile_plot": dg.MetadataValue.md(markdown_image(figure, "segment profiles")),
            "matches": dg.MetadataValue.md(
                markdown_table(
                    report,
                    [
                        "segment_id",
                        "segment_name",
                        "previous_segment_id",
                        "previous_name",
                        "distance",
                        "status",
                    ],
                )
            ),
            "matched_segments": int((report["status"] == "matched").sum()),
            "match_summary": (
                f"first version: {model.k} new segments"
                if previous is None
                else f"{int((report['status'] == 'matched').sum())} of {model.k} segments kept"
                " their ids from the previous version"
            ),
        },
    )
