"""One partition's quality verdict: ingest and validate what landed, reconcile it with the landing
file, compare Great Expectations' counts with the quarantine's, record the results, and build the
scorecard. No Dagster import: `cartintel_assets.defs.ingestion` and `defs.quality` map these to
asset checks and metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd

from cartintel_assets.contracts.schema import TABLES_BY_NAME, TableSpec
from cartintel_assets.ingestion.ingest import (
    IngestResult,
    judge_staged,
    staged_landing,
    utc_now,
)
from cartintel_assets.quality.suites import STANDARDS, Expectation, Outcome, validate_landed
from cartintel_assets.warehouse.tables import has_table, replace_rows


def gate_expectations(spec: TableSpec, limit: float) -> tuple[Expectation, ...]:
    """The partition-level checks beside the suite: each is blocking (ERROR)."""
    a = spec.raw_table
    return (
        Expectation(
            f"{a}_rows_reconcile",
            "completeness",
            "ERROR",
            "computed",
            {},
            "lines in the landing file = rows accepted + rows quarantined (counted in the"
            " warehouse): nothing lost, nothing doubled",
        ),
        Expectation(
            f"{a}_quarantine_share_within_limit",
            "accuracy",
            "ERROR",
            "computed",
            {"limit": limit},
            "quarantined share of landed rows within the limit",
        ),
        Expectation(
            f"{a}_expectations_match_quarantine",
            "consistency",
            "ERROR",
            "computed",
            {},
            "per quarantine rule case, Great Expectations counts as many breaking rows as the"
            " quarantine's SQL (two implementations checking each other)",
        ),
    )


def landed_lines(path: str | None) -> int:
    """Records in a landing file, counted from the file itself: lines of JSONL (a last line
    without its newline counts), rows of Parquet (from its footer)."""
    if path is None:
        return 0
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with Path(path).open("rb") as fh:
        return sum(1 for _ in fh)


def written_rows(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, partition: date
) -> tuple[int, int]:
    """Rows of a partition in the raw table and in the quarantine table, as written."""
    q = "SELECT count(*) FROM {} WHERE partition_date = ?"
    accepted = con.execute(q.format(spec.raw_table), [partition]).fetchall()[0][0]
    quarantined = con.execute(q.format(spec.quarantine_table), [partition]).fetchall()[0][0]
    return int(accepted), int(quarantined)


def agreement(outcomes: list[Outcome], flagged: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per rule case: the rows Great Expectations found breaking it (summed over the expectations
    mirroring it) and the rows the quarantine's SQL flagged."""
    out = {case: {"expectations": 0, "quarantine": n} for case, n in flagged.items()}
    for o in outcomes:
        case = o.expectation.mirrors
        if case is not None:
            out.setdefault(case, {"expectations": 0, "quarantine": 0})
            out[case]["expectations"] += o.unexpected_count
    return out


@dataclass(frozen=True)
class PartitionQuality:
    """What ingesting and validating one table's partition found."""

    result: IngestResult
    outcomes: list[Outcome]  # the suite's, then the gate's


def ingest_and_validate(
    con: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    partition: date,
    landing_dir: Path,
    pseudonym_key: str,
    max_quarantine_share: float,
    now: datetime | None = None,
) -> PartitionQuality:
    """Ingest one table's partition (accept or quarantine every landed row), validate what landed
    with the table's suite, and judge the partition: reconciliation with the landing file, the
    quarantined share, and the agreement of the suite with the quarantine. Records the outcomes
    in `dq_check_results`."""
    now = now or utc_now()
    with staged_landing(con, spec, partition, landing_dir, pseudonym_key) as source:
        result = judge_staged(con, spec, partition, source, now)
        suite = validate_landed(con, spec, partition, now)
    lines = landed_lines(source)
    accepted, quarantined = written_rows(con, spec, partition)
    share = quarantined / lines if lines else 0.0
    counts = agreement(suite, result.flagged)
    mismatched = {c: n for c, n in counts.items() if n["expectations"] != n["quarantine"]}
    reconcile, limit, agree = gate_expectations(spec, max_quarantine_share)
    outcomes = [
        *suite,
        Outcome(
            reconcile,
            lines == accepted + quarantined,
            {"landed_lines": lines, "accepted": accepted, "quarantined": quarantined},
        ),
        Outcome(
            limit,
            share <= max_quarantine_share,
            {"observed_value": share, "limit": max_quarantine_share},
        ),
        Outcome(agree, not mismatched, {"by_rule_case": counts, "mismatched": mismatched}),
    ]
    record_outcomes(con, spec.name, partition, outcomes, now.isoformat(timespec="seconds"))
    return PartitionQuality(result, outcomes)


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
