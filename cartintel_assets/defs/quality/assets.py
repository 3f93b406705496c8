"""The data-quality scorecard: the four standards of the product brief, per partition."""

from datetime import date
from typing import Any

import dagster as dg

from cartintel_assets.contracts.schema import TABLES
from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.ingestion.ingest import RULE_STANDARD
from cartintel_assets.quality.checks import scorecard, write_scorecard
from cartintel_assets.resources import WarehouseResource


# It depends on the quarantine outputs, which carry no blocking checks, so that a failed gate on a
# raw table never hides the scorecard that reports it. It reads the ingestion log, the quarantine
# tables and the check results that the same ingestion steps recorded.
@dg.asset(
    group_name="quality",
    partitions_def=daily_partitions,
    deps=[spec.quarantine_table for spec in TABLES],
    kinds={"duckdb"},
)
def data_quality_scorecard(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Accuracy, completeness, consistency and timeliness of one day's landed data.

    Per standard: checks passed, blocking failures, warnings, rows quarantined for its rules and a
    row score (share of landed rows meeting it); status fail / warn / pass.
    """
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        card = scorecard(con, day, RULE_STANDARD)
        write_scorecard(con, card, day)
    view = card.drop(columns=["partition_date"])
    metadata: dict[str, Any] = {"scorecard": dg.MetadataValue.md(view.to_markdown(index=False))}
    for row in card.itertuples():
        metadata[f"{row.standard}_row_score"] = float(row.row_score)
        metadata[f"{row.standard}_status"] = str(row.status)
    metadata["dagster/row_count"] = len(card)
    return dg.MaterializeResult(metadata=metadata)
