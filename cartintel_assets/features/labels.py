"""Outcome labels of cart sessions: abandoned, and whether the abandonment was harmful.

A cart is abandoned when its session ends without a purchase. The abandonment is benign when the
same customer buys a product of that cart later, by the 7th day after the cart's day (a delayed
decision), harmful otherwise (a lost sale). A label is final only once 7 days of later data have landed (`label_complete`).
No Dagster import.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pandas as pd

from cartintel_assets.features.sessions import cart_value_sql

RETURN_WINDOW_DAYS = 7

_SQL = f"""
WITH carts AS (
    SELECT s.session_id, s.customer_id, s.started_at,
           bool_or(e.event_type = 'purchase') AS purchased_in_session,
           max(e.ts) AS ended_at,
           coalesce(any_value(v.cart_value), 0) AS cart_value
    FROM raw_sessions s JOIN raw_events e
      ON e.session_id = s.session_id AND e.partition_date = s.partition_date
    LEFT JOIN ({cart_value_sql("day")}) v ON v.session_id = s.session_id
    WHERE s.partition_date = $day
    GROUP BY ALL
    HAVING count(*) FILTER (WHERE e.event_type = 'add_to_cart') > 0
),
cart_products AS (
    SELECT DISTINCT e.session_id, e.product_id FROM raw_events e
    WHERE e.partition_date = $day AND e.event_type = 'add_to_cart'
),
later_purchases AS (  -- sessions of the next 7 days that bought, with the products they carted
    SELECT s.customer_id, s.started_at, e.product_id
    FROM raw_sessions s JOIN raw_events e
      ON e.session_id = s.session_id AND e.partition_date = s.partition_date
    WHERE s.partition_date BETWEEN $day AND $last
      AND e.event_type = 'add_to_cart'
      AND EXISTS (SELECT 1 FROM raw_events p WHERE p.session_id = s.session_id
                  AND p.partition_date = s.partition_date AND p.event_type = 'purchase')
),
returned AS (
    SELECT DISTINCT c.session_id
    FROM carts c JOIN cart_products cp USING (session_id)
    JOIN later_purchases lp ON lp.customer_id = c.customer_id AND lp.product_id = cp.product_id
     AND lp.started_at > c.ended_at AND CAST(lp.started_at AS DATE) <= $last
)
SELECT c.session_id, c.customer_id, c.started_at, c.cart_value,
       NOT c.purchased_in_session AS abandoned,
       NOT c.purchased_in_session AND r.session_id IS NOT NULL AS benign,
       NOT c.purchased_in_session AND r.session_id IS NULL AS harmful,
       (SELECT max(partition_date) FROM raw_events) >= $last AS label_complete
FROM carts c LEFT JOIN returned r USING (session_id)
ORDER BY c.session_id
"""


def cart_labels(
    con: duckdb.DuckDBPyConnection, day: date, into: str = "_cart_labels"
) -> pd.DataFrame:
    """Labels of the cart sessions that started on `day`, from that day and the 7 after it
    (also kept, with their SQL types, in the temporary table `into`)."""
    params = {"day": day, "last": day + timedelta(days=RETURN_WINDOW_DAYS)}
    con.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS {_SQL}", params)
    return con.table(into).df()


def why_no_final_label(con: duckdb.DuckDBPyConnection) -> str:
    """Why no cart of `abandonment_labels` has a final label yet, with what to land."""
    n, first_cart, last_day = con.execute(
        "SELECT count(*), min(CAST(started_at AS DATE)),"
        " (SELECT max(partition_date) FROM raw_events) FROM abandonment_labels"
    ).fetchone()  # type: ignore[misc]
    if not n:
        return "no cart session is labelled yet: ingest the landed days first (`cartintel ingest`)"
    closes = first_cart + timedelta(days=RETURN_WINDOW_DAYS)
    return (
        f"none of the {n:,} labelled carts has a final label yet: a label needs the"
        f" {RETURN_WINDOW_DAYS} days after its cart, the landed events end on {last_day} and the"
        f" earliest cart's window closes on {closes}; land the days up to then (the time-based"
        f" split then needs final labels on 3 days or more)"
    )
