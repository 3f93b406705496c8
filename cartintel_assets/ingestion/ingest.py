"""Landing → warehouse: validate every landed row, accept it or quarantine it with a reason.

Row-level rules run as DuckDB SQL over the landed records (vectorised, one pass). A partition is
written in one transaction that replaces it, so re-ingesting a partition never duplicates rows,
and for every partition `landed = accepted + quarantined` (kept in `ingestion_log`).
No Dagster import: the assets in `cartintel_assets.defs.ingestion` call this.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from cartintel_assets.contracts.schema import (
    PERSONAL_ID_COLUMNS,
    PRODUCT_EVENT_TYPES,
    TABLES,
    TableSpec,
)
from cartintel_assets.warehouse.tables import transaction

# Quarantine rules, in the order they are tried: a row is quarantined under the first it breaks.
RULES: tuple[str, ...] = (
    "malformed_record",
    "missing_required_field",
    "invalid_value",
    "not_allowed_value",
    "out_of_range",
    "future_timestamp",
    "unknown_customer",
    "unknown_session",
    "unknown_product",
    "out_of_order_timestamp",
    "duplicate_record",
)
# The quality standard of the product brief that each quarantine rule protects.
RULE_STANDARD: dict[str, str] = {
    "malformed_record": "accuracy",
    "missing_required_field": "completeness",
    "invalid_value": "accuracy",
    "not_allowed_value": "accuracy",
    "out_of_range": "accuracy",
    "future_timestamp": "timeliness",
    "unknown_customer": "consistency",
    "unknown_session": "consistency",
    "unknown_product": "consistency",
    "out_of_order_timestamp": "consistency",
    "duplicate_record": "consistency",
}
FUTURE_TOLERANCE = timedelta(days=1)  # events of a session may run past midnight
CLOCK_SKEW = timedelta(minutes=1)


class LandingSchemaError(ValueError):
    """A landing file whose structure (not its rows) is wrong: nothing can be ingested from it."""


@dataclass
class IngestResult:
    """What happened to one table's partition: the reconciliation that asset metadata shows."""

    table: str
    partition: str
    source_file: str | None
    landed: int
    accepted: int
    quarantined: int
    by_rule: dict[str, int] = field(default_factory=dict)
    # rows breaking each rule case, whatever rule quarantined them (`flagged_counts`)
    flagged: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.landed == self.accepted + self.quarantined


def pseudonymise(values: list[str], key: str) -> list[str]:
    """Keyed hash (HMAC-SHA256) of personal ids: stable per key, not reversible without it."""
    k = key.encode()
    return ["c_" + hmac.new(k, v.encode(), hashlib.sha256).hexdigest()[:32] for v in values]


def warehouse_ddl(spec: TableSpec) -> list[str]:
    """DDL for a table's raw and quarantine tables (created if missing; an optional column the
    contract gained since is added to a warehouse created before it)."""
    cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in spec.columns)
    return [
        f"CREATE TABLE IF NOT EXISTS {spec.raw_table} ({cols}, partition_date DATE NOT NULL,"
        " source_line BIGINT NOT NULL, ingested_at TIMESTAMP NOT NULL)",
        *(
            f'ALTER TABLE {spec.raw_table} ADD COLUMN IF NOT EXISTS "{c.name}" {c.sql_type}'
            for c in spec.columns
            if not c.required
        ),
        f"CREATE TABLE IF NOT EXISTS {spec.quarantine_table} (partition_date DATE NOT NULL,"
        " source_line BIGINT NOT NULL, rule VARCHAR NOT NULL, reason VARCHAR NOT NULL,"
        " raw_record VARCHAR, source_file VARCHAR, ingested_at TIMESTAMP NOT NULL)",
    ]


INGESTION_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS ingestion_log (table_name VARCHAR NOT NULL, partition_date DATE"
    " NOT NULL, source_file VARCHAR, landed BIGINT NOT NULL, accepted BIGINT NOT NULL,"
    " quarantined BIGINT NOT NULL, ingested_at TIMESTAMP NOT NULL)"
)


def ensure_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """Create every raw, quarantine and log table that does not exist yet."""
    for spec in TABLES:
        for ddl in warehouse_ddl(spec):
            con.execute(ddl)
    con.execute(INGESTION_LOG_DDL)


def read_landing_records(path: Path, landing_format: str) -> pa.Table:
    """Read a landing file as (line number, raw record text), keeping every line, even broken ones."""
    if landing_format == "jsonl":
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last record; it is not a record
        lines = [ln.rstrip("\r") for ln in lines]
        return pa.table(
            {
                "_line_no": pa.array(range(1, len(lines) + 1), pa.int64()),
                "_raw": pa.array(lines, pa.string()),
            }
        )
    if landing_format == "parquet":
        con = duckdb.connect()
        try:
            rel = con.sql(
                "SELECT CAST(row_number() OVER () AS BIGINT) AS _line_no, CAST(to_json(p) AS VARCHAR) AS _raw"
                " FROM read_parquet(?) p",
                params=[str(path)],
            )
            return rel.to_arrow_table()
        except duckdb.Error as exc:
            raise LandingSchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
        finally:
            con.close()
    raise ValueError(f"unknown landing format {landing_format!r}")


def _check_parquet_columns(path: Path, spec: TableSpec) -> None:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    missing = [c.name for c in spec.columns if c.required and c.name not in names]
    if missing:
        raise LandingSchemaError(
            f"{path}: landing file for {spec.name!r} lacks required column(s) {missing};"
            f" expected the canonical schema (see README, data contracts)"
        )


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class RuleCase:
    """One way a row breaks a quarantine rule: the rule, the case (rule and column, the id the
    Great Expectations suite mirrors), a SQL condition over the staged columns and the reason."""

    rule: str
    case: str
    condition: str
    reason: str


def future_limit(partition: date, now: datetime) -> datetime:
    """The latest timestamp a partition accepts: its end plus a tolerance, and never past now."""
    return min(
        datetime.combine(partition, datetime.min.time()) + timedelta(days=1) + FUTURE_TOLERANCE,
        now + CLOCK_SKEW,
    )


def _rule_cases(spec: TableSpec, partition: date, now: datetime) -> list[RuleCase]:
    """Every case of every rule, in rule order (a row is quarantined under the first it breaks)."""
    out = [
        RuleCase(
            "malformed_record",
            "malformed_record",
            "_j IS NULL",
            "'record is not a JSON object: ' || left(_raw, 200)",
        )
    ]
    req = [c for c in spec.columns if c.required]
    names = ", ".join(f"CASE WHEN \"{c.name}__txt\" IS NULL THEN '{c.name}' END" for c in req)
    for c in req:
        out.append(
            RuleCase(
                "missing_required_field",
                f"missing_required_field:{c.name}",
                f'"{c.name}__txt" IS NULL',
                f"'missing required field(s): ' || concat_ws(', ', {names})",
            )
        )
    if spec.name == "events":
        types = ", ".join(_sql_str(t) for t in PRODUCT_EVENT_TYPES)
        out.append(
            RuleCase(
                "missing_required_field",
                "missing_required_field:product_id",
                f"event_type IN ({types}) AND product_id__txt IS NULL",
                "'missing required field(s): product_id (required for ' || event_type || ')'",
            )
        )
    for c in spec.columns:
        if c.sql_type == "VARCHAR":
            continue
        # JSON's 1e999, NaN and Infinity, and "inf", cast to DOUBLE: not finite, so invalid too
        finite = f' OR NOT isfinite("{c.name}")' if c.sql_type == "DOUBLE" else ""
        what = (
            f"CASE WHEN \"{c.name}\" IS NULL THEN 'a valid {c.sql_type}' ELSE 'a finite number' END"
            if finite
            else f"'a valid {c.sql_type}'"
        )
        out.append(
            RuleCase(
                "invalid_value",
                f"invalid_value:{c.name}",
                f'"{c.name}__txt" IS NOT NULL AND ("{c.name}" IS NULL{finite})',
                f"'{c.name}=' || left(\"{c.name}__txt\", 60) || ' is not ' || {what}",
            )
        )
    for c in spec.columns:
        if c.allowed:
            allowed = ", ".join(_sql_str(a) for a in c.allowed)
            out.append(
                RuleCase(
                    "not_allowed_value",
                    f"not_allowed_value:{c.name}",
                    f'"{c.name}" IS NOT NULL AND "{c.name}" NOT IN ({allowed})',
                    f"'{c.name}=' || left(\"{c.name}\", 60) || ' is not one of [{', '.join(c.allowed)}]'",
                )
            )
    for c in spec.columns:
        # DuckDB orders NaN above every number; a NaN is invalid, not out of range
        number = f' AND NOT isnan("{c.name}")' if c.sql_type == "DOUBLE" else ""
        if c.min_value is not None:
            out.append(
                RuleCase(
                    "out_of_range",
                    f"out_of_range:{c.name}",
                    f'"{c.name}" < {c.min_value}',
                    f"'{c.name}=' || \"{c.name}\" || ' is below the minimum {c.min_value:g}'",
                )
            )
        if c.max_value is not None:
            out.append(
                RuleCase(
                    "out_of_range",
                    f"out_of_range:{c.name}",
                    f'"{c.name}" > {c.max_value}{number}',
                    f"'{c.name}=' || \"{c.name}\" || ' is above the maximum {c.max_value:g}'",
                )
            )
    if spec.time_column:
        limit = future_limit(partition, now)
        t = spec.time_column
        out.append(
            RuleCase(
                "future_timestamp",
                f"future_timestamp:{t}",
                f"\"{t}\" > TIMESTAMP '{limit:%Y-%m-%d %H:%M:%S}'",
                f"'{t}=' || \"{t}\" || ' is after {limit:%Y-%m-%d %H:%M:%S} (partition end + tolerance, or now)'",
            )
        )
    for ref in spec.references:
        alias = f"_ref_{ref.column}"
        out.append(
            RuleCase(
                ref.rule,
                f"{ref.rule}:{ref.column}",
                f'"{ref.column}" IS NOT NULL AND {alias}.k IS NULL',
                f"'{ref.column}=' || \"{ref.column}\" || ' not found in raw_{ref.table}'",
            )
        )
    if spec.name == "events":
        out.append(
            RuleCase(
                "out_of_order_timestamp",
                "out_of_order_timestamp:ts",
                f"ts < _sess.started_at - INTERVAL {int(CLOCK_SKEW.total_seconds())} SECOND",
                "'ts=' || ts || ' is before its session started at ' || _sess.started_at",
            )
        )
    return out


# The duplicate rule's cases: a key repeated within the landed file (every copy counts; the
# quarantine keeps the first), and a key already loaded in another partition.
DUPLICATE_IN_FILE = "duplicate_record:in_file"
DUPLICATE_OF_LOADED = "duplicate_record:already_loaded"


def _key_sql(spec: TableSpec, alias: str) -> tuple[str, str]:
    """The key columns, and the condition that not all of them are missing."""
    cols = ", ".join(f'{alias}."{k}"' for k in spec.key)
    some = " OR ".join(f'{alias}."{k}" IS NOT NULL' for k in spec.key)
    return cols, f"({some})"


def flagged_counts(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date, cases: list[RuleCase]
) -> dict[str, int]:
    """How many staged (landed) rows break each rule case (`cases`, as the quarantine judged
    them), whatever rule they are quarantined under: the quarantine's side of the comparison with
    the Great Expectations suite."""
    by_case: dict[str, list[str]] = {}
    for c in cases:
        by_case.setdefault(c.case, []).append(f"({c.condition})")
    key, some = _key_sql(spec, "s")
    names = [*by_case, DUPLICATE_IN_FILE]
    selects = [f"count(*) FILTER (WHERE {' OR '.join(conds)})" for conds in by_case.values()]
    selects.append("count(*) FILTER (WHERE _repeated)")
    if spec.key_unique_across_partitions:
        loaded = " AND ".join(f'r."{k}" = s."{k}"' for k in spec.key)
        names.append(DUPLICATE_OF_LOADED)
        selects.append(
            f"count(*) FILTER (WHERE {some} AND EXISTS (SELECT 1 FROM {spec.raw_table} r WHERE"
            f" {loaded} AND r.partition_date <> DATE '{partition.isoformat()}'))"
        )
    # a window function cannot stand in a FILTER: the in-file repeats are marked in a subquery
    staged = (
        f"SELECT s.*, {some} AND count(*) OVER (PARTITION BY {key}) > 1 AS _repeated FROM _stage s"
    )
    row = con.execute(
        f"SELECT {', '.join(selects)} FROM ({staged}) s {_reference_joins(spec, partition)}"
    ).fetchall()[0]
    return {n: int(v) for n, v in zip(names, row, strict=True)}


def _reference_joins(spec: TableSpec, partition: date) -> str:
    joins = []
    for ref in spec.references:
        cmp = "=" if ref.same_partition else "<="
        joins.append(
            f"LEFT JOIN (SELECT DISTINCT {ref.target_column} AS k FROM raw_{ref.table}"
            f" WHERE partition_date {cmp} DATE '{partition.isoformat()}') _ref_{ref.column}"
            f' ON _ref_{ref.column}.k = s."{ref.column}"'
        )
    if spec.name == "events":
        joins.append(
            "LEFT JOIN (SELECT session_id AS sid, min(started_at) AS started_at FROM raw_sessions"
            f" WHERE partition_date = DATE '{partition.isoformat()}' GROUP BY 1) _sess ON _sess.sid = s.session_id"
        )
    return "\n".join(joins)


def ingest_partition(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    partition: date,
    landing_dir: Path,
    pseudonym_key: str,
    now: datetime | None = None,
) -> IngestResult:
    """Load one table's landing file for one day into the warehouse, replacing that partition.

    Every landed record ends in `raw_<table>` or `quarantined_<table>` (with rule and reason);
    the counts are written to `ingestion_log`. A missing landing file lands zero rows.
    """
    now = now or utc_now()
    with staged_landing(con, spec, partition, landing_dir, pseudonym_key) as source:
        return judge_staged(con, spec, partition, source, now)


def utc_now() -> datetime:
    """Now, as the warehouse keeps times: naive UTC, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def landed_folders(root: Path) -> tuple[list[str], list[str]]:
    """The day folders (`YYYY-MM-DD`) under `root` in order, and the other folders, which are
    no day: a misplaced folder is named to the user, never taken for a day nor skipped silently.
    Folders starting with "_" hold the bookkeeping of foreign logs (rejects, manifests)."""
    days: list[str] = []
    other: list[str] = []
    if not root.exists():
        return days, other
    for p in root.iterdir():
        if not p.is_dir() or p.name.startswith("_"):
            continue
        try:
            is_day = date.fromisoformat(p.name).isoformat() == p.name  # not 20191001
        except ValueError:
            is_day = False
        (days if is_day else other).append(p.name)
    return sorted(days), sorted(other)


def landing_path(spec: TableSpec, partition: date, landing_dir: Path) -> Path:
    """Where one table's file for one day lands."""
    return landing_dir / partition.isoformat() / spec.landing_file


@contextmanager
def staged_landing(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    partition: date,
    landing_dir: Path,
    pseudonym_key: str,
) -> Iterator[str | None]:
    """Stage what landed for one table and day as the temp table `_stage`: every line, with each
    field as landed text (`<column>__txt`) and typed (NULL where it does not parse), personal ids
    pseudonymised. Yields the landing file's path (None when nothing landed); drops the stage on
    exit."""
    path = landing_path(spec, partition, landing_dir)
    if path.exists():
        if spec.landing_format == "parquet":
            _check_parquet_columns(path, spec)
        records = read_landing_records(path, spec.landing_format)
        source: str | None = str(path)
    else:
        records = pa.table(
            {"_line_no": pa.array([], pa.int64()), "_raw": pa.array([], pa.string())}
        )
        source = None
    ensure_warehouse(con)
    con.register("_landed", records)
    try:
        typed = ", ".join(
            f"_j->>'{c.name}' AS \"{c.name}__txt\", TRY_CAST(_j->>'{c.name}' AS {c.sql_type}) AS \"{c.name}\""
            for c in spec.columns
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _stage AS SELECT _line_no, _raw, _j, "
            + typed
            + " FROM (SELECT _line_no, _raw, CASE WHEN json_type(TRY_CAST(_raw AS JSON)) = 'OBJECT'"
            " THEN TRY_CAST(_raw AS JSON) END AS _j FROM _landed)"
        )
        con.unregister("_landed")
        for col in PERSONAL_ID_COLUMNS:
            if any(c.name == col for c in spec.columns):
                _pseudonymise_column(con, col, pseudonym_key)
        yield source
    finally:
        with suppress(duckdb.Error):
            con.unregister("_landed")
        con.execute("DROP TABLE IF EXISTS _stage")


def judge_staged(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    partition: date,
    source: str | None,
    now: datetime,
) -> IngestResult:
    """Judge every staged row (accept it, or quarantine it under the first rule it breaks) and
    replace the partition's raw rows, quarantined rows and `ingestion_log` entry in one
    transaction. Also counts the rows breaking each rule case (`flagged`)."""
    try:
        cases = _rule_cases(spec, partition, now)
        rule_sql = "CASE " + " ".join(f"WHEN {c.condition} THEN '{c.rule}'" for c in cases) + " END"
        reason_sql = (
            "CASE " + " ".join(f"WHEN {c.condition} THEN {c.reason}" for c in cases) + " END"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _judged AS SELECT s.*, {rule_sql} AS _rule, {reason_sql} AS _reason"
            f" FROM _stage s {_reference_joins(spec, partition)}"
        )
        _mark_duplicates(con, spec, partition)
        flagged = flagged_counts(con, spec, partition, cases)
        cols = ", ".join(f'"{c.name}"' for c in spec.columns)
        p = f"DATE '{partition.isoformat()}'"
        ts = f"TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}'"
        src = "NULL" if source is None else _sql_str(source)
        with transaction(con):
            con.execute(f"DELETE FROM {spec.raw_table} WHERE partition_date = {p}")
            con.execute(
                f"INSERT INTO {spec.raw_table} ({cols}, partition_date, source_line, ingested_at)"
                f" SELECT {cols}, {p}, _line_no, {ts} FROM _judged WHERE _rule IS NULL ORDER BY _line_no"
            )
            con.execute(f"DELETE FROM {spec.quarantine_table} WHERE partition_date = {p}")
            con.execute(
                f"INSERT INTO {spec.quarantine_table} SELECT {p}, _line_no, _rule, _reason,"
                f" CASE WHEN _j IS NULL THEN _raw ELSE CAST(_j AS VARCHAR) END, {src}, {ts}"
                " FROM _judged WHERE _rule IS NOT NULL ORDER BY _line_no"
            )
            counts = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE _rule IS NULL), count(*) FILTER (WHERE _rule IS NOT NULL) FROM _judged"
            ).fetchall()[0]
            by_rule = dict(
                con.execute(
                    "SELECT _rule, count(*) FROM _judged WHERE _rule IS NOT NULL GROUP BY 1 ORDER BY 1"
                ).fetchall()
            )
            con.execute(
                f"DELETE FROM ingestion_log WHERE table_name = '{spec.name}' AND partition_date = {p}"
            )
            con.execute(
                f"INSERT INTO ingestion_log VALUES ('{spec.name}', {p}, {src}, ?, ?, ?, {ts})",
                [counts[0], counts[1], counts[2]],
            )
    finally:
        con.execute("DROP TABLE IF EXISTS _judged")
    return IngestResult(
        table=spec.name,
        partition=partition.isoformat(),
        source_file=source,
        landed=int(counts[0]),
        accepted=int(counts[1]),
        quarantined=int(counts[2]),
        by_rule={str(k): int(v) for k, v in by_rule.items()},
        flagged=flagged,
    )


def _pseudonymise_column(con: duckdb.DuckDBPyConnection, col: str, key: str) -> None:
    """Replace a personal id by its keyed hash in the typed column and in the kept raw record."""
    raw = [
        r[0]
        for r in con.execute(
            f'SELECT DISTINCT "{col}" FROM _stage WHERE "{col}" IS NOT NULL'
        ).fetchall()
    ]
    mapping = pa.table(
        {
            "raw_id": pa.array(raw, pa.string()),
            "pseudo": pa.array(pseudonymise(raw, key), pa.string()),
        }
    )
    con.register("_pseudo", mapping)
    try:
        con.execute(
            f'UPDATE _stage SET "{col}" = m.pseudo, "{col}__txt" = m.pseudo,'
            f" _j = json_merge_patch(_j, json_object('{col}', m.pseudo))"
            f' FROM _pseudo m WHERE _stage."{col}" = m.raw_id'
        )
        # an id that was present but not text (so not matched above) must not survive raw either
        con.execute(
            f"UPDATE _stage SET _j = json_merge_patch(_j, json_object('{col}', 'unparseable-id-removed'))"
            f" WHERE _j IS NOT NULL AND \"{col}\" IS NULL AND (_j->>'{col}') IS NOT NULL"
        )
    finally:
        con.unregister("_pseudo")


def _mark_duplicates(con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date) -> None:
    """Quarantine repeats of a key: within the partition (later lines) and, where keys are
    immutable, keys already loaded in another partition."""
    key = ", ".join(f'"{k}"' for k in spec.key)
    con.execute(
        "UPDATE _judged SET _rule = 'duplicate_record', _reason = 'duplicate of line ' || d.first_line"
        f" || ' (key {', '.join(spec.key)})'"
        f" FROM (SELECT _line_no AS ln, min(_line_no) OVER (PARTITION BY {key}) AS first_line,"
        f" row_number() OVER (PARTITION BY {key} ORDER BY _line_no) AS rn FROM _judged WHERE _rule IS NULL) d"
        " WHERE _judged._line_no = d.ln AND d.rn > 1"
    )
    if spec.key_unique_across_partitions:
        on = " AND ".join(f'r."{k}" = _judged."{k}"' for k in spec.key)
        con.execute(
            "UPDATE _judged SET _rule = 'duplicate_record', _reason = 'key already loaded in partition ' || r.partition_date"
            f" FROM {spec.raw_table} r WHERE _judged._rule IS NULL AND {on}"
            f" AND r.partition_date <> DATE '{partition.isoformat()}'"
        )
