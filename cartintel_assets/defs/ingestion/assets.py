"""Ingestion: one multi-asset per landed table, writing `raw_<table>` and `quarantined_<table>`.

The same step validates the accepted rows with the table's Great Expectations suite and emits one
asset check per expectation (ERROR = blocking), plus the reconciliation and quarantine-share
gates. `dagster-ge` only supports GX < 1.0, so this is the thin GX 1.x → asset-check adapter.
"""


from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field

from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.ml.ingest import RULE_STANDARD, IngestResult, ingest_partition
from cartintel_assets.ml.quality import SUITES, Outcome, record_outcomes, validate_partition
from cartintel_assets.ml.schema import TABLES, TableSpec
from cartintel_assets.resources import LandingResource, WarehouseResource


class IngestionConfig(dg.Config):
    """Gate settings for one table's ingestion."""

    max_quarantine_share: float = Field(
        default=0.05,
        description="Blocking when more than this share of the landed rows is quarantined.",
    )


def _severity(severity: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if severity == "ERROR" else dg.AssetCheckSeverity.WARN


def check_result(asset: str, outcome: Outcome, partition: str) -> dg.AssetCheckResult:
    """Map one GX expectation outcome to a Dagster asset check result."""
    e = outcome.expectation
    metadata: dict[str, object] = {
        "standard": e.standard,
        "partition": partition,
        "expectation": e.gx_type,
        "kwargs": dg.MetadataValue.json(e.kwargs),
    }
    for k, v in outcome.result.items():
        metadata[k] = dg.MetadataValue.json(v) if isinstance(v, list | dict) else v
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=e.check,
        passed=outcome.success,
        severity=_severity(e.severity),
        metadata=metadata,
        description=e.description,
    )


def gate_names(spec: TableSpec) -> tuple[str, str]:
    return f"{spec.raw_table}_rows_reconcile", f"{spec.raw_table}_quarantine_share_within_limit"


def build_ingestion_asset(spec: TableSpec) -> dg.AssetsDefinition:
    """Build the multi-asset that ingests one landed table into the warehouse."""
    reconcile, share = gate_names(spec)
    check_specs = [
        dg.AssetCheckSpec(e.check, asset=spec.raw_table, description=e.description, blocking=e.severity == "ERROR")
        for e in SUITES[spec.name]
    ] + [
        dg.AssetCheckSpec(reconcile, asset=spec.raw_table, blocking=True, description="landed = accepted + quarantined"),
        dg.AssetCheckSpec(share, asset=spec.raw_table, blocking=True, description="quarantined share of landed rows within the limit"),
    ]

    @dg.multi_asset(
        name=f"ingest_{spec.name}",
        specs=[
            dg.AssetSpec(
                spec.raw_table,
                description=f"{spec.description} Accepted rows, pseudonymised.",
                group_name="ingestion",
                deps=[f"raw_{d}" for d in spec.depends_on],
                kinds={"duckdb"},
                partitions_def=daily_partitions,
            ),
            dg.AssetSpec(
                spec.quarantine_table,
                description=f"Rejected {spec.name} rows with the rule they broke, the reason and the raw record.",
                group_name="ingestion",
                kinds={"duckdb"},
                partitions_def=daily_partitions,
            ),
        ],
        check_specs=check_specs,
        partitions_def=daily_partitions,
    )
    def _ingest(
        context: dg.AssetExecutionContext,
        config: IngestionConfig,
        warehouse: WarehouseResource,
        landing: LandingResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        partition = context.partition_key
        day = date.fromisoformat(partition)
        with warehouse.get_connection() as con:
            result = ingest_partition(con, spec, day, landing.path(), landing.pseudonym_key())
            outcomes = validate_partition(con, spec, day)
            record_outcomes(con, spec.name, day, outcomes, _now_iso())
        context.log.info(
            f"{spec.name} {partition}: landed {result.landed}, accepted {result.accepted},"
            f" quarantined {result.quarantined} {result.by_rule}"
        )
        yield dg.MaterializeResult(asset_key=spec.raw_table, metadata=_raw_metadata(result))
        yield dg.MaterializeResult(
            asset_key=spec.quarantine_table,
            metadata={
                "dagster/row_count": result.quarantined,
                "by_rule": dg.MetadataValue.json(result.by_rule),
                "by_standard": dg.MetadataValue.json(_by_standard(result.by_rule)),
            },
        )
        for outcome in outcomes:
            yield check_result(spec.raw_table, outcome, partition)
        yield dg.AssetCheckResult(
            asset_key=spec.raw_table,
            check_name=reconcile,
            passed=result.reconciles,
            metadata={"landed": result.landed, "accepted": result.accepted, "quarantined": result.quarantined},
        )
        observed = result.quarantined / result.landed if result.landed else 0.0
        yield dg.AssetCheckResult(
            asset_key=spec.raw_table,
            check_name=share,
            passed=observed <= config.max_quarantine_share,
            metadata={"quarantine_share": observed, "limit": config.max_quarantine_share},
            description=f"{observed:.2%} of landed rows quarantined (limit {config.max_quarantine_share:.0%})",
        )

    return _ingest


def _by_standard(by_rule: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rule, n in by_rule.items():
        out[RULE_STANDARD[rule]] = out.get(RULE_STANDARD[rule], 0) + n
    return out


def _raw_metadata(result: IngestResult) -> dict[str, object]:
    return {
        "dagster/row_count": result.accepted,
        "rows_landed": result.landed,
        "rows_accepted": result.accepted,
        "rows_quarantined": result.quarantined,
        "reconciles": result.reconciles,
        "quarantined_by_rule": dg.MetadataValue.json(result.by_rule),
        "source_file": dg.MetadataValue.path(result.source_file) if result.source_file else "none landed",
    }


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


ingestion_assets: list[dg.AssetsDefinition] = [build_ingestion_asset(spec) for spec in TABLES]
