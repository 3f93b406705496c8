"""Great Expectations suites over what *landed* in a partition, before quarantine.

Each expectation belongs to one of the four standards of the product brief (accuracy,
completeness, consistency, timeliness). Row-level expectations each mirror one case of a
quarantine rule (`mirrors`, e.g. `out_of_range:price`): GX counts the landed rows that break it,
independently of the SQL that quarantines them, and `checks.agreement` compares the two counts.
Rows breaking a mirrored expectation are quarantined, so those expectations report (WARN) rather
than block; the blocking gate judges the share of quarantined rows, the reconciliation of the
landing file, the agreement and the table-level rules. Cross-row and cross-table rules
(references, session start, repeated keys) are derived columns of the validation frame,
computed in SQL apart from the quarantine's joins. No Dagster import.
"""

from __future__ import annotations

import keyword
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import duckdb
import pandas as pd

from cartintel_assets.contracts.schema import (
    PRODUCT_EVENT_TYPES,
    SUBJECT_LINKED_COLUMNS,
    TABLES_BY_NAME,
    TableSpec,
)
from cartintel_assets.ingestion.ingest import (
    CLOCK_SKEW,
    DUPLICATE_IN_FILE,
    DUPLICATE_OF_LOADED,
    future_limit,
)

STANDARDS: tuple[str, ...] = ("accuracy", "completeness", "consistency", "timeliness")
# Tables a partition cannot do without: an empty one is an ERROR, elsewhere a WARN.
CORE_TABLES: frozenset[str] = frozenset({"sessions", "events", "products"})
# Continuous feeds: their day is complete only if data runs until near midnight.
CONTINUOUS_TABLES: frozenset[str] = frozenset({"sessions", "events"})
FRESHNESS_HOURS = 3.0
LARGEST_DOUBLE = sys.float_info.max
EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Expectation:
    """One rule of a suite: the check name, its standard and severity, the GX expectation and the
    quarantine rule case it mirrors (None: a rule the quarantine does not enforce)."""

    check: str  # full Dagster check name: <asset>_<predicate>
    standard: str
    severity: str  # "ERROR" (blocking) or "WARN"
    gx_type: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    mirrors: str | None = None


@dataclass(frozen=True)
class Outcome:
    """The result of one expectation on one partition."""

    expectation: Expectation
    success: bool
    result: dict[str, Any]

    @property
    def unexpected_count(self) -> int:
        return int(self.result.get("unexpected_count") or 0)


def epoch_seconds(at: datetime) -> float:
    """A naive UTC time as seconds since 1970, as the frame holds times (GX compares numbers
    column-wise; datetimes it compares one value at a time, ~20x slower)."""
    return (at - EPOCH).total_seconds()


def _known(column: str, table: str) -> tuple[str, str]:
    return f"{column}_known", f"{column} references an existing {table} row"


def _row_rule(
    check: str, standard: str, gx_type: str, kwargs: dict[str, Any], description: str, mirrors: str
) -> Expectation:
    """A row-level expectation mirroring a quarantine rule case: the rows breaking it are
    quarantined, so it reports their number (WARN) instead of blocking."""
    return Expectation(
        check, standard, "WARN", gx_type, kwargs, f"{description} (else quarantined)", mirrors
    )


def suite_for(spec: TableSpec, latest: datetime | None = None) -> tuple[Expectation, ...]:
    """The expectation suite of one table's landed rows, from its contract plus table rules.
    `latest`: the latest timestamp the partition accepts (`future_limit`); None gives the suite's
    checks with a placeholder bound (their names and descriptions)."""
    a = spec.raw_table
    out: list[Expectation] = [
        _row_rule(
            f"{a}_records_are_json_objects",
            "accuracy",
            "ExpectColumnValuesToNotBeNull",
            {"column": "_is_object"},
            "every landed line is a JSON object",
            "malformed_record",
        )
    ]
    for c in spec.columns:
        if c.required:
            out.append(
                _row_rule(
                    f"{a}_{c.name}_not_null",
                    "completeness",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": f"{c.name}__landed"},
                    f"every row has {c.name}",
                    f"missing_required_field:{c.name}",
                )
            )
    if spec.name == "events":
        out.append(
            _row_rule(
                f"{a}_product_events_name_product",
                "completeness",
                "ExpectColumnValuesToNotBeNull",
                {
                    "column": "product_id__landed",
                    "row_condition": f"event_type in {list(PRODUCT_EVENT_TYPES)}",
                    "condition_parser": "pandas",
                },
                "product events carry a product_id",
                "missing_required_field:product_id",
            )
        )
    for c in spec.columns:
        if c.sql_type == "VARCHAR":
            continue
        out.append(
            _row_rule(
                f"{a}_{c.name}_parses",
                "accuracy",
                "ExpectColumnValuesToNotBeNull",
                {
                    "column": c.name,
                    "row_condition": f"{c.name}__landed.notnull()",
                    "condition_parser": "pandas",
                },
                f"a landed {c.name} is a valid {c.sql_type}",
                f"invalid_value:{c.name}",
            )
        )
        if c.sql_type == "DOUBLE":  # NaN fails `_parses` (pandas reads it as missing); ±inf here
            out.append(
                _row_rule(
                    f"{a}_{c.name}_finite",
                    "accuracy",
                    "ExpectColumnValuesToBeBetween",
                    {"column": c.name, "min_value": -LARGEST_DOUBLE, "max_value": LARGEST_DOUBLE},
                    f"{c.name} is a finite number",
                    f"invalid_value:{c.name}",
                )
            )
    for c in spec.columns:
        if c.allowed:
            out.append(
                _row_rule(
                    f"{a}_{c.name}_in_allowed_set",
                    "accuracy",
                    "ExpectColumnValuesToBeInSet",
                    {"column": c.name, "value_set": list(c.allowed)},
                    f"{c.name} is one of {', '.join(c.allowed)}",
                    f"not_allowed_value:{c.name}",
                )
            )
        if c.min_value is not None or c.max_value is not None:
            out.append(
                _row_rule(
                    f"{a}_{c.name}_in_range",
                    "accuracy",
                    "ExpectColumnValuesToBeBetween",
                    {"column": c.name, "min_value": c.min_value, "max_value": c.max_value},
                    f"{c.name} within [{c.min_value}, {c.max_value}]",
                    f"out_of_range:{c.name}",
                )
            )
    if spec.time_column:
        t = spec.time_column
        out.append(
            _row_rule(
                f"{a}_{t}_not_in_future",
                "timeliness",
                "ExpectColumnValuesToBeBetween",
                {"column": t, "max_value": epoch_seconds(latest) if latest else "the bound"},
                f"{t} is not after the partition's end (plus a tolerance) nor after now"
                + (f" ({latest:%Y-%m-%d %H:%M:%S})" if latest else ""),
                f"future_timestamp:{t}",
            )
        )
    for ref in spec.references:
        col, desc = _known(ref.column, ref.table)
        out.append(
            _row_rule(
                f"{a}_have_known_{ref.table}",
                "consistency",
                "ExpectColumnValuesToBeInSet",
                {"column": col, "value_set": [True]},
                desc,
                f"{ref.rule}:{ref.column}",
            )
        )
    if spec.name == "events":
        out.append(
            _row_rule(
                f"{a}_start_with_their_session",
                "consistency",
                "ExpectColumnValuesToBeInSet",
                {"column": "ts_after_session_start", "value_set": [True]},
                "no event is timed before its session started",
                "out_of_order_timestamp:ts",
            )
        )
    if len(spec.key) == 1:
        out.append(
            _row_rule(
                f"{a}_{spec.key[0]}_unique",
                "consistency",
                "ExpectColumnValuesToBeUnique",
                {"column": spec.key[0]},
                f"{spec.key[0]} identifies a row (every copy of a repeated key counts)",
                DUPLICATE_IN_FILE,
            )
        )
    else:
        out.append(
            _row_rule(
                f"{a}_key_unique",
                "consistency",
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": list(spec.key)},
                f"({', '.join(spec.key)}) identifies a row (every copy of a repeated key counts)",
                DUPLICATE_IN_FILE,
            )
        )
    if spec.key_unique_across_partitions:
        out.append(
            _row_rule(
                f"{a}_key_not_loaded_before",
                "consistency",
                "ExpectColumnValuesToBeInSet",
                {"column": "key_not_loaded_before", "value_set": [True]},
                "the key was not loaded in another partition",
                DUPLICATE_OF_LOADED,
            )
        )
    if spec.name == "events":
        out += [
            Expectation(
                f"{a}_follow_session_order",
                "consistency",
                "WARN",
                "ExpectColumnValuesToBeInSet",
                {"column": "ts_follows_seq", "value_set": [True]},
                "within a session, time never goes back as seq increases (a landed row out of"
                " order breaks it for its neighbour too)",
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


def _frame_column(name: str, sql_type: str) -> str:
    """A typed field as the frame holds it: times as epoch seconds and whole numbers as DOUBLE,
    so GX compares them column-wise (it compares other dtypes one value at a time)."""
    if sql_type in ("DATE", "TIMESTAMP"):
        return f'epoch(t."{name}")'
    if sql_type in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT"):
        return f'CAST(t."{name}" AS DOUBLE)'
    return f't."{name}"'


def _columns(expectations: tuple[Expectation, ...]) -> set[str]:
    """The frame columns a suite reads (its columns and those its row conditions name)."""
    out: set[str] = set()
    for e in expectations:
        out.update([e.kwargs["column"]] if "column" in e.kwargs else [])
        out.update(e.kwargs.get("column_list", []))
        condition = e.kwargs.get("row_condition", "")
        names = (w.split(".")[0] for w in condition.split())
        out.update(n for n in names if n.isidentifier() and not keyword.iskeyword(n))
    return out


def landed_frame(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date, columns: set[str]
) -> pd.DataFrame:
    """What landed for one table and day (the staged `_stage` of
    `ingestion.ingest.staged_landing`, every line, before any quarantine): the typed fields,
    times as seconds since 1970 (`epoch_seconds`), whether each field was present
    (`<column>__landed`, 1 or missing), whether the line was a
    JSON object (`_is_object`), and the derived columns of the cross-row rules. Only `columns`
    are read: GX fingerprints the whole frame, so a slim frame validates faster."""
    p = f"DATE '{partition.isoformat()}'"
    sql: dict[str, str] = {c.name: _frame_column(c.name, c.sql_type) for c in spec.columns}
    for c in spec.columns:
        sql[f"{c.name}__landed"] = (
            f'CAST(CASE WHEN t."{c.name}__txt" IS NOT NULL THEN 1 END AS DOUBLE)'
        )
    sql["_is_object"] = "CAST(CASE WHEN t._j IS NOT NULL THEN 1 END AS DOUBLE)"
    for ref in spec.references:
        cmp = "=" if ref.same_partition else "<="
        col, _ = _known(ref.column, ref.table)
        sql[col] = (
            f'(t."{ref.column}" IS NULL OR EXISTS (SELECT 1 FROM raw_{ref.table} r WHERE r.{ref.target_column} = t."{ref.column}"'
            f" AND r.partition_date {cmp} {p}))"
        )
    if spec.time_column:
        t = spec.time_column
        sql["in_partition_window"] = f'CAST(t."{t}" AS DATE) BETWEEN {p} AND {p} + 1'
        sql["hours_before_partition_end"] = (
            f"date_diff('second', t.\"{t}\", CAST({p} + 1 AS TIMESTAMP)) / 3600.0"
        )
    if spec.name == "events":
        skew = int(CLOCK_SKEW.total_seconds())
        sql["ts_after_session_start"] = (
            "NOT EXISTS (SELECT 1 FROM raw_sessions r WHERE r.partition_date = "
            f"{p} AND r.session_id = t.session_id AND t.ts < r.started_at - INTERVAL {skew} SECOND)"
        )
        sql["ts_follows_seq"] = (
            "coalesce(t.ts >= lag(t.ts) OVER (PARTITION BY t.session_id ORDER BY t.seq), TRUE)"
        )
        sql["purchase_after_cart"] = (
            "CASE WHEN t.event_type = 'purchase' THEN coalesce(count(*) FILTER (WHERE t.event_type = 'add_to_cart')"
            " OVER (PARTITION BY t.session_id ORDER BY t.seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) > 0 END"
        )
    if spec.key_unique_across_partitions:
        on = " AND ".join(f'r."{k}" = t."{k}"' for k in spec.key)
        sql["key_not_loaded_before"] = (
            f"NOT EXISTS (SELECT 1 FROM {spec.raw_table} r WHERE {on} AND r.partition_date <> {p})"
        )
    missing = columns - set(sql)
    if missing:
        raise ValueError(
            f"the suite of {spec.name} reads columns the frame lacks: {sorted(missing)}"
        )
    picked = ", ".join(f'{expr} AS "{name}"' for name, expr in sql.items() if name in columns)
    return con.execute(f"SELECT {picked} FROM _stage t ORDER BY t._line_no").df()


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
        e = by_check[check]
        linked = {e.kwargs.get("column"), *e.kwargs.get("column_list", ())}
        withheld = bool(linked & set(SUBJECT_LINKED_COLUMNS))
        outcomes.append(Outcome(e, bool(r.success), _plain(r.result, withheld)))
    order = {e.check: i for i, e in enumerate(expectations)}
    return sorted(outcomes, key=lambda o: order[o.expectation.check])


def _plain(result: dict[str, Any], withheld: bool = False) -> dict[str, Any]:
    """Keep the JSON-friendly summary fields of a GX result, as plain Python values; `withheld`:
    the values are ids linked to a data subject, so only their count is kept."""
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
        shown = out.pop("partial_unexpected_list")[:10]
        if withheld:
            out["partial_unexpected_withheld"] = (
                f"{len(shown)} ids (the quarantine table holds the rows)"
            )
        else:
            out["partial_unexpected_list"] = [str(v) for v in shown]
    return out


def _python(value: Any) -> Any:
    """numpy scalars (GX returns them for min/max/mean) become their Python equivalents."""
    return value.item() if hasattr(value, "item") and not isinstance(value, list | dict) else value


def validate_landed(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date, now: datetime
) -> list[Outcome]:
    """Run a table's suite on what landed for one day (staged, before quarantine)."""
    suite = suite_for(spec, future_limit(partition, now))
    frame = landed_frame(con, spec, partition, _columns(suite))
    return run_suite(suite, frame, spec.raw_table)
