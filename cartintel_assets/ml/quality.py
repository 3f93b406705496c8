"""Data-quality suites for the raw tables, written in code and run with Great Expectations 1.x.

Each expectation belongs to one of the four standards of the product brief (accuracy,
completeness, consistency, timeliness) and has a severity: ERROR expectations are blocking gates,
WARN ones are reported only. Cross-row and cross-table rules (references, event order, cart
before purchase, partition window) are computed as derived columns of the validation frame in SQL,
so GX checks them with plain column expectations. No Dagster import: the Dagster asset checks in
`cartintel_assets.defs.ingestion` map these outcomes to `AssetCheckResult`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from cartintel_assets.ml.schema import PRODUCT_EVENT_TYPES, TABLES_BY_NAME, TableSpec
from cartintel_assets.ml.warehouse import has_table, replace_rows

STANDARDS: tuple[str, ...] = ("accuracy", "completeness", "consistency", "timeliness")
# Tables a partition cannot do without: an empty one is an ERROR, elsewhere a WARN.
CORE_TABLES: frozenset[str] = frozenset({"sessions", "events", "products"})
# Continuous feeds: their day is complete only if data runs until near midnight.
CONTINUOUS_TABLES: frozenset[str] = frozenset({"sessions", "events"})
FRESHNESS_HOURS = 3.0


@dataclass(frozen=True)
class Expectation:
    """One rule of a suite: the check name, its standard and severity, and the GX expectation."""

    check: str  # full Dagster check name: <asset>_<predicate>
    standard: str
    severity: str  # "ERROR" (blocking) or "WARN"
    gx_type: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Outcome:
    """The result of one expectation on one partition."""

    expectation: Expectation
    success: bool
    result: dict[str, Any]

    @property
    def unexpected_count(self) -> int:
        return int(self.result.get("unexpected_count") or 0)


def _known(column: str, table: str) -> tuple[str, str]:
    return f"{column}_known", f"{column} references an existing {table} row"


def suite_for(spec: TableSpec) -> tuple[Expectation, ...]:
    """The expectation suite of one raw table, derived from its contract plus table rules."""
    a = spec.raw_table
    out: list[Expectation] = []
    for c in spec.columns:
        if c.required:
            out.append(
                Expectation(
                    f"{a}_{c.name}_not_null",
                    "completeness",
                    "ERROR",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": c.name},
                    f"every row has {c.name}",
                )
            )
    for c in spec.columns:
        if c.allowed:
            out.append(
                Expectation(
                    f"{a}_{c.name}_in_allowed_set",
                    "accuracy",
                    "ERROR",
                    "ExpectColumnValuesToBeInSet",
                    {"column": c.name, "value_set": list(c.allowed)},
                    f"{c.name} is one of {', '.join(c.allowed)}",
                )
            )
        if c.min_value is not None or c.max_value is not None:
            out.append(
                Expectation(
                    f"{a}_{c.name}_in_range",
                    "accuracy",
                    "ERROR",
                    "ExpectColumnValuesToBeBetween",
                    {"column": c.name, "min_value": c.min_value, "max_value": c.max_value},
                    f"{c.name} within [{c.min_value}, {c.max_value}]",
                )
            )
    if len(spec.key) == 1:
        out.append(
            Expectation(
                f"{a}_{spec.key[0]}_unique",
                "consistency",
                "ERROR",
                "ExpectColumnValuesToBeUnique",
                {"column": spec.key[0]},
                f"{spec.key[0]} identifies a row",
            )
        )
    else:
        out.append(
            Expectation(
                f"{a}_key_unique",
                "consistency",
                "ERROR",
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": list(spec.key)},
                f"({', '.join(spec.key)}) identifies a row",
            )
        )
    for ref in spec.references:
        col, desc = _known(ref.column, ref.table)
        out.append(
            Expectation(
                f"{a}_have_known_{ref.table}",
                "consistency",
                "ERROR",
                "ExpectColumnValuesToBeInSet",
                {"column": col, "value_set": [True]},
                desc,
            )
        )
    if spec.name == "events":
        out += [
            Expectation(
                f"{a}_product_events_name_product",
                "completeness",
                "ERROR",
                "ExpectColumnValuesToBeInSet",
                {"column": "product_named_if_needed", "value_set": [True]},
                "product events carry a product_id",
            ),
            Expectation(
                f"{a}_follow_session_order",
                "consistency",
                "ERROR",
                "ExpectColumnValuesToBeInSet",
                {"column": "ts_follows_seq", "value_set": [True]},
                "within a session, time never goes back as seq increases",
            ),
            Expectation(
                f"{a}_purchase_after_cart",
                "consistency",
                "WARN",
                "ExpectColumnValuesToBeInSet",
                {"column": "purchase_after_cart", "value_set": [True], "mostly": 0.95},
                "a purchase follows an add_to_cart in its session (persistent carts allow a few exceptions)",
            ),
        ]
    if spec.time_column:
        out.append(
            Expectation(
                f"{a}_on_time",
                "timeliness",
                "WARN",
                "ExpectColumnValuesToBeInSet",
                {"column": "in_partition_window", "value_set": [True], "mostly": 0.99},
                f"{spec.time_column} falls on the partition day (or the next, for sessions past midnight); late rows are flagged",
            )
        )
    if spec.name in CONTINUOUS_TABLES:
        out.append(
            Expectation(
                f"{a}_fresh_through_end_of_day",
                "timeliness",
                "WARN",
                "ExpectColumnMinToBeBetween",
                {"column": "hours_before_partition_end", "max_value": FRESHNESS_HOURS},
                f"the latest {spec.time_column} is within {FRESHNESS_HOURS:g} h of the partition's end (a feed that stops early is stale or incomplete)",
            )
        )
    out.append(
        Expectation(
            f"{a}_not_empty",
            "completeness",
            "ERROR" if spec.name in CORE_TABLES else "WARN",
            "ExpectTableRowCountToBeBetween",
            {"min_value": 1},
            "the partition landed at least one row",
        )
    )
    return tuple(out)


SUITES: dict[str, tuple[Expectation, ...]] = {
    name: suite_for(spec) for name, spec in TABLES_BY_NAME.items()
}


def validation_frame(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date
) -> pd.DataFrame:
    """The accepted rows of one partition plus the derived columns the suite checks."""
    p = f"DATE '{partition.isoformat()}'"
    extra: list[str] = []
    for ref in spec.references:
        cmp = "=" if ref.same_partition else "<="
        col, _ = _known(ref.column, ref.table)
        extra.append(
            f'(t."{ref.column}" IS NULL OR EXISTS (SELECT 1 FROM raw_{ref.table} r WHERE r.{ref.target_column} = t."{ref.column}"'
            f" AND r.partition_date {cmp} {p})) AS {col}"
        )
    if spec.time_column:
        extra.append(
            f'CAST(t."{spec.time_column}" AS DATE) BETWEEN {p} AND {p} + 1 AS in_partition_window'
        )
        extra.append(
            f"date_diff('second', t.\"{spec.time_column}\", CAST({p} + 1 AS TIMESTAMP)) / 3600.0"
            " AS hours_before_partition_end"
        )
    if spec.name == "events":
        types = ", ".join(f"'{x}'" for x in PRODUCT_EVENT_TYPES)
        extra += [
            f"(t.event_type NOT IN ({types}) OR t.product_id IS NOT NULL) AS product_named_if_needed",
            "coalesce(t.ts >= lag(t.ts) OVER (PARTITION BY t.session_id ORDER BY t.seq), TRUE) AS ts_follows_seq",
            "CASE WHEN t.event_type = 'purchase' THEN coalesce(count(*) FILTER (WHERE t.event_type = 'add_to_cart')"
            " OVER (PARTITION BY t.session_id ORDER BY t.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) > 0 END"
            " AS purchase_after_cart",
        ]
    cols = ", ".join(["t.*", *extra])
    return con.execute(f"SELECT {cols} FROM {spec.raw_table} t WHERE t.partition_date = {p}").df()


def run_suite(
    expectations: tuple[Expectation, ...], frame: pd.DataFrame, name: str
) -> list[Outcome]:
    """Validate `frame` against the suite with GX (ephemeral, offline, no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    ctx = gx.get_context(project_config=config, mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas("cartintel")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("partition")
    )
    gx_expectations = []
    for e in expectations:
        cls = getattr(gx.expectations, e.gx_type)
        gx_expectations.append(cls(**e.kwargs, meta={"check": e.check}))
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=gx_expectations))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format="SUMMARY")
    by_check = {e.check: e for e in expectations}
    outcomes = []
    for r in result.results:
        assert r.expectation_config is not None and r.expectation_config.meta
        check = r.expectation_config.meta["check"]
        outcomes.append(Outcome(by_check[check], bool(r.success), _plain(r.result)))
    order = {e.check: i for i, e in enumerate(expectations)}
    return sorted(outcomes, key=lambda o: order[o.expectation.check])


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    """Keep the JSON-friendly summary fields of a GX result, as plain Python values."""
    keys = (
        "observed_value",
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "missing_count",
        "partial_unexpected_list",
    )
    out = {k: _python(result[k]) for k in keys if k in result}
    if "partial_unexpected_list" in out:
        out["partial_unexpected_list"] = [str(v) for v in out["partial_unexpected_list"][:10]]
    return out


def _python(value: Any) -> Any:
    """numpy scalars (GX returns them for min/max/mean) become their Python equivalents."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | dict) else value


def validate_partition(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date
) -> list[Outcome]:
    """Run a raw table's suite on one partition of the warehouse."""
    frame = validation_frame(con, spec, partition)
    return run_suite(SUITES[spec.name], frame, spec.raw_table)


DQ_RESULTS_DDL = (
    "CREATE TABLE IF NOT EXISTS dq_check_results (table_name VARCHAR NOT NULL, partition_date DATE NOT NULL,"
    " check_name VARCHAR NOT NULL, standard VARCHAR NOT NULL, severity VARCHAR NOT NULL, passed BOOLEAN NOT NULL,"
    " unexpected_count BIGINT, element_count BIGINT, evaluated_at TIMESTAMP NOT NULL)"
)


def record_outcomes(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition: date,
    outcomes: list[Outcome],
    evaluated_at: str,
) -> None:
    """Replace one table-partition's check results in `dq_check_results` (read by the scorecard)."""
    con.execute(DQ_RESULTS_DDL)
    rows = pd.DataFrame(
        {
            "table_name": table,
            "partition_date": partition,
            "check_name": [o.expectation.check for o in outcomes],
            "standard": [o.expectation.standard for o in outcomes],
            "severity": [o.expectation.severity for o in outcomes],
            "passed": [o.success for o in outcomes],
            "unexpected_count": [o.result.get("unexpected_count") for o in outcomes],
            "element_count": [o.result.get("element_count") for o in outcomes],
            "evaluated_at": pd.Timestamp(evaluated_at),
        }
    )
    replace_rows(
        con, "dq_check_results", rows, "table_name = ? AND partition_date = ?", [table, partition]
    )


def failed_blocking_checks(
    con: duckdb.DuckDBPyConnection, table: str, partition: date
) -> list[str]:
    """The ERROR-severity checks that failed for a table's partition (a missing record fails too)."""
    rows = (
        []
        if not has_table(con, "dq_check_results")
        else con.execute(
            "SELECT check_name, passed FROM dq_check_results WHERE table_name = ? AND partition_date = ? AND severity = 'ERROR'",
            [table, partition],
        ).fetchall()
    )
    if not rows:
        return [f"no recorded checks for {table} {partition}"]
    return sorted(name for name, passed in rows if not passed)


SCORECARD_DDL = (
    "CREATE TABLE IF NOT EXISTS data_quality_scorecard (partition_date DATE NOT NULL, standard VARCHAR NOT NULL,"
    " checks_total BIGINT, checks_passed BIGINT, blocking_failures BIGINT, warnings BIGINT,"
    " rows_landed BIGINT, rows_quarantined BIGINT, row_score DOUBLE, status VARCHAR)"
)


def scorecard(
    con: duckdb.DuckDBPyConnection, partition: date, rule_standard: dict[str, str]
) -> pd.DataFrame:
    """The four standards for one partition: check pass counts and the share of landed rows that
    met the standard (1 - quarantined for its rules / landed), with a pass/warn/fail status."""
    con.execute(DQ_RESULTS_DDL)
    checks = con.execute(
        "SELECT standard, count(*) AS checks_total, count(*) FILTER (WHERE passed) AS checks_passed,"
        " count(*) FILTER (WHERE NOT passed AND severity = 'ERROR') AS blocking_failures,"
        " count(*) FILTER (WHERE NOT passed AND severity = 'WARN') AS warnings"
        " FROM dq_check_results WHERE partition_date = ? GROUP BY 1",
        [partition],
    ).df()
    landed = con.execute(
        "SELECT coalesce(sum(landed), 0) FROM ingestion_log WHERE partition_date = ?", [partition]
    ).fetchall()[0][0]
    union = " UNION ALL ".join(
        f"SELECT rule FROM quarantined_{name} WHERE partition_date = $p" for name in TABLES_BY_NAME
    )
    rules = con.execute(
        f"SELECT rule, count(*) AS n FROM ({union}) GROUP BY 1", {"p": partition}
    ).df()
    rules["standard"] = rules["rule"].map(rule_standard)
    quarantined = rules.groupby("standard")["n"].sum()
    out = (
        pd.DataFrame({"standard": list(STANDARDS)})
        .merge(checks, on="standard", how="left")
        .fillna(0)
    )
    out.insert(0, "partition_date", partition)
    out["rows_landed"] = int(landed)
    out["rows_quarantined"] = [int(quarantined.get(s, 0)) for s in out["standard"]]
    out["row_score"] = 1.0 - out["rows_quarantined"] / max(int(landed), 1)
    out["status"] = [
        "fail" if b > 0 else ("warn" if w > 0 else "pass")
        for b, w in zip(out["blocking_failures"], out["warnings"], strict=True)
    ]
    for c in ("checks_total", "checks_passed", "blocking_failures", "warnings"):
        out[c] = out[c].astype("int64")
    return out


def write_scorecard(con: duckdb.DuckDBPyConnection, card: pd.DataFrame, partition: date) -> None:
    """Replace one partition of the `data_quality_scorecard` table."""
    con.execute(SCORECARD_DDL)
    replace_rows(con, "data_quality_scorecard", card, "partition_date = ?", [partition])
