"""Ingestion: one multi-asset per landed table, writing `raw_<table>` and `quarantined_<table>`.

The same step (`quality.checks.ingest_and_validate`) validates what *landed*, before quarantine,
with the table's Great Expectations suite, and emits one asset check per expectation (with its
ERROR/WARN severity), plus the reconciliation with the landing file, the quarantine-share check
and the agreement of GX's counts with the quarantine's; it records them in the warehouse. A
separate blocking check per raw table, `<raw table>_passes_quality_gate`, fails when any
ERROR-severity check of the partition failed: it stops everything downstream of that table, while
the quarantine outputs (and the scorecard built on them) still land, so a failure is reported
rather than hidden. `dagster-ge` only supports GX < 1.0, so this is the thin GX 1.x → asset-check
adapter.
"""

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from cartintel_assets.contracts.schema import TABLES, TableSpec
from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.ingestion.ingest import RULE_STANDARD, IngestResult
from cartintel_assets.ingestion.mapping import account_sources
from cartintel_assets.quality.checks import (
    failed_blocking_checks,
    gate_expectations,
    ingest_and_validate,
)
from cartintel_assets.quality.suites import SUITES, Outcome
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
    metadata: dict[str, Any] = {
        "standard": e.standard,
        "partition": partition,
        "expectation": e.gx_type,
        "kwargs": dg.MetadataValue.json(json.loads(json.dumps(e.kwargs, default=str))),
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


def build_quality_gate(spec: TableSpec) -> dg.AssetChecksDefinition:
    """The blocking gate of one raw table: every ERROR-severity check of the partition passed."""

    @dg.asset_check(
        asset=spec.raw_table,
        name=f"{spec.raw_table}_passes_quality_gate",
        blocking=True,
        partitions_def=daily_partitions,
        description="Blocking: all ERROR-severity data-quality checks of this partition passed.",
    )
    def _gate(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        with warehouse.reader() as con:
            failed = failed_blocking_checks(
                con, spec.name, date.fromisoformat(context.partition_key)
            )
        return dg.AssetCheckResult(
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failed_error_checks": dg.MetadataValue.json(failed),
                "partition": context.partition_key,
            },
        )

    return _gate


def build_ingestion_asset(spec: TableSpec) -> dg.AssetsDefinition:
    """Build the multi-asset that ingests one landed table into the warehouse."""
    check_specs = [
        dg.AssetCheckSpec(
            e.check,
            asset=spec.raw_table,
            description=f"[{e.severity}, {e.standard}] {e.description}",
        )
        for e in (*SUITES[spec.name], *gate_expectations(spec, 0.0))
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
            quality = ingest_and_validate(
                con,
                spec,
                day,
                landing.path(),
                landing.pseudonym_key(),
                config.max_quarantine_share,
            )
        result, outcomes = quality.result, quality.outcomes
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

    return _ingest


def _by_standard(by_rule: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rule, n in by_rule.items():
        out[RULE_STANDARD[rule]] = out.get(RULE_STANDARD[rule], 0) + n
    return out


def _raw_metadata(result: IngestResult) -> dict[str, Any]:
    return {
        "dagster/row_count": result.accepted,
        "rows_landed": result.landed,
        "rows_accepted": result.accepted,
        "rows_quarantined": result.quarantined,
        "reconciles": result.reconciles,
        "quarantined_by_rule": dg.MetadataValue.json(result.by_rule),
        "source_file": dg.MetadataValue.path(result.source_file)
        if result.source_file
        else "none landed",
    }


ingestion_assets: list[dg.AssetsDefinition] = [build_ingestion_asset(spec) for spec in TABLES]
quality_gates: list[dg.AssetChecksDefinition] = [build_quality_gate(spec) for spec in TABLES]


@dg.asset(
    group_name="ingestion",
    deps=["raw_events"],
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "every_source_line_accounted_for",
            asset="landed_log_accounting",
            description="Each landed log's lines (counted from its bytes) = events accepted +"
            " quarantined by ingestion + lines rejected at landing (+ lines erased since), and every day it landed on"
            " is ingested.",
        )
    ],
)
def landed_log_accounting(
    warehouse: WarehouseResource, landing: LandingResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Where every line of each foreign log landed with `cartintel land-events` went: its
    manifest's line count against the warehouse's accepted and quarantined events of its days
    and the rejects file's lines."""
    with warehouse.reader() as con:
        accounts = account_sources(con, landing.path())
    rows = [
        "| source | mapping | lines | accepted | quarantined | rejected at landing | erased"
        " | days not ingested |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        *(
            f"| {a.source} | {a.mapping} | {a.lines:,} | {a.accepted:,} | {a.quarantined:,} |"
            f" {a.rejected:,} | {a.erased:,} | {', '.join(a.not_ingested) or '-'} |"
            for a in accounts
        ),
    ]
    summary = [asdict(a) | {"accounted": a.accounted} for a in accounts]
    yield dg.MaterializeResult(
        metadata={
            "sources": len(accounts),
            "lines": sum(a.lines for a in accounts),
            "accounting": dg.MetadataValue.md("\n".join(rows)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="every_source_line_accounted_for",
        passed=all(a.accounted for a in accounts),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"sources": dg.MetadataValue.json(summary)},
    )
