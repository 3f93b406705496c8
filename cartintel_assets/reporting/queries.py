"""The warehouse queries behind what cartintel reports: the executive dashboard and the command
line's run summary read the same numbers through these. Each returns an empty frame when its
table does not exist yet (the reader then says what to run). No Dagster import.

`lo`/`hi` bound `partition_date` (inclusive); `day` is one partition.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import pandas as pd

from cartintel_assets.warehouse.tables import has_columns, has_table

_WINDOW = "partition_date BETWEEN CAST($lo AS DATE) AND CAST($hi AS DATE)"


def query(con: duckdb.DuckDBPyConnection, table: str, sql: str, params: Any = None) -> pd.DataFrame:
    """`sql` when `table` exists, else an empty frame."""
    return con.execute(sql, params or []).df() if has_table(con, table) else pd.DataFrame()


def latest_day(con: duckdb.DuckDBPyConnection, table: str) -> date | None:
    """The newest partition of `table`, or None."""
    if not has_table(con, table):
        return None
    day: date | None = con.execute(f"SELECT max(partition_date) FROM {table}").fetchall()[0][0]
    return day


def ingestion_totals(con: duckdb.DuckDBPyConnection, lo: str, hi: str) -> pd.DataFrame:
    """Per raw table: lines landed, rows accepted and quarantined over the window."""
    return query(
        con,
        "ingestion_log",
        "SELECT table_name, sum(landed)::BIGINT landed, sum(accepted)::BIGINT accepted,"
        f" sum(quarantined)::BIGINT quarantined FROM ingestion_log WHERE {_WINDOW}"
        " GROUP BY 1 ORDER BY 1",
        {"lo": lo, "hi": hi},
    )


def label_rates(con: duckdb.DuckDBPyConnection, lo: str, hi: str) -> pd.DataFrame:
    """One row: cart sessions, the in-session abandonment rate and, among carts with a complete
    return window, the harmful share of carts and the benign share of abandoned carts."""
    return query(
        con,
        "abandonment_labels",
        "SELECT count(*) AS carts, avg(abandoned::INT) AS abandoned,"
        " avg(harmful::INT) FILTER (WHERE label_complete) AS harmful,"
        " avg(benign::INT) FILTER (WHERE label_complete AND abandoned) AS benign,"
        " count(*) FILTER (WHERE label_complete) AS complete"
        f" FROM abandonment_labels WHERE {_WINDOW}",
        {"lo": lo, "hi": hi},
    )


def feature_rows(con: duckdb.DuckDBPyConnection, lo: str, hi: str) -> int:
    rows = query(
        con,
        "session_features",
        f"SELECT count(*) AS n FROM session_features WHERE {_WINDOW}",
        {"lo": lo, "hi": hi},
    )
    return 0 if rows.empty else int(rows["n"].iloc[0])


def scored_carts(con: duckdb.DuckDBPyConnection, day: date | str | None) -> pd.DataFrame:
    """The day's scored open carts with their features (cart value, region, device, the values
    behind the reason codes), riskiest first."""
    return query(
        con,
        "abandonment_scores",
        "SELECT s.session_id, s.risk, s.risk_decile, s.reason_codes, s.model_version,"
        " s.model_alias, f.* EXCLUDE (session_id, partition_date) FROM abandonment_scores s"
        " JOIN session_features f USING (session_id, partition_date)"
        " WHERE s.partition_date = CAST(? AS DATE) ORDER BY s.risk DESC, s.session_id",
        [day],
    )


def segment_sizes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per segment: its name, customers and mean assignment probability."""
    return query(
        con,
        "customer_segments",
        "SELECT segment_id, segment_name, count(*) AS customers, avg(probability) AS probability"
        " FROM customer_segments GROUP BY ALL ORDER BY segment_id",
    )


def planned_carts(con: duckdb.DuckDBPyConnection, day: date | str | None) -> pd.DataFrame:
    """The day's plan, one row per cart: segment, risk, action and why, cost and margin."""
    return query(
        con,
        "intervention_plan",
        "SELECT coalesce(segment, 'unsegmented') AS segment, risk, action, reason,"
        " expected_cost, incremental_conversion, incremental_margin FROM intervention_plan"
        " WHERE partition_date = CAST(? AS DATE)",
        [day],
    )


def plan_by_action(plan: pd.DataFrame) -> pd.DataFrame:
    """`planned_carts` per action: carts, expected spend, incremental conversions and margin."""
    if plan.empty:
        return pd.DataFrame()
    return (
        plan.groupby("action")
        .agg(
            carts=("risk", "size"),
            expected_cost=("expected_cost", "sum"),
            incremental_conversions=("incremental_conversion", "sum"),
            incremental_margin=("incremental_margin", "sum"),
        )
        .reset_index()
    )


def friction_drivers(con: duckdb.DuckDBPyConnection, scope_type: str) -> pd.DataFrame:
    """Ranked friction drivers per scope (`category` or `segment`), strongest first."""
    return query(
        con,
        "friction_drivers",
        "SELECT scope, feature, mean_abs_shap, stability, friction_rank FROM friction_drivers"
        " WHERE scope_type = ? AND friction_rank IS NOT NULL"
        " ORDER BY friction_rank, mean_abs_shap DESC",
        [scope_type],
    )


def friction_index(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return query(con, "friction_index", "SELECT * FROM friction_index ORDER BY friction_index DESC")


def review_signals(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per category: reviews, mean rating, negative share and the share per complaint aspect."""
    return query(
        con,
        "category_review_signals",
        "SELECT * FROM category_review_signals ORDER BY negative_share DESC",
    )


def promotion_moves(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The promotion log, oldest first."""
    return query(con, "promotion_log", "SELECT * FROM promotion_log ORDER BY logged_at, rowid")


def monitoring_checks(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Drift and performance verdicts per day and scoring version, oldest first."""
    return query(
        con,
        "monitoring_results",
        "SELECT partition_date, model_version, check_name, passed, value, detail"
        " FROM monitoring_results ORDER BY partition_date, model_version, check_name",
    )


def quality_scorecard(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The data-quality scorecard: per day and standard, its row score, status and failures."""
    return query(
        con,
        "data_quality_scorecard",
        "SELECT partition_date, standard, row_score, status, blocking_failures, warnings,"
        " rows_quarantined FROM data_quality_scorecard ORDER BY partition_date, standard",
    )


def acted_decisions(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every decision of a published plan the shop acted on (plan, exploration, holdout) with
    its realised 7-day outcome: the plan's day and uplift version, the arm, the cart."""
    if not (
        has_table(con, "intervention_plan") and has_columns(con, "raw_interventions", "chosen_by")
    ):
        return pd.DataFrame()
    return con.execute(
        "SELECT p.partition_date AS day, p.uplift_model_version AS policy_version, i.chosen_by,"
        " i.treatment, i.converted_7d, f.cart_value, f.shipping_cost"
        " FROM raw_interventions i JOIN intervention_plan p USING (session_id)"
        " JOIN session_features f USING (session_id)"
        " WHERE i.chosen_by IN ('plan', 'exploration', 'holdout') ORDER BY day, i.session_id"
    ).df()


def expected_by_day(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """What each published plan expected of its decisions (plan and exploration), per day and
    uplift version."""
    return query(
        con,
        "intervention_plan",
        "SELECT partition_date AS day, uplift_model_version AS policy_version,"
        " sum(incremental_conversion) AS expected_conversions,"
        " sum(incremental_margin) AS expected_margin FROM intervention_plan"
        " WHERE chosen_by IN ('plan', 'exploration') GROUP BY ALL ORDER BY day, policy_version",
    )
