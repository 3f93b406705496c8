"""Cart sessions: one row per session that put something in the cart, with its in-session outcome.

The conformed table later feature and label code starts from. No Dagster import.
"""

from __future__ import annotations

from datetime import date

import duckdb

from cartintel_assets.warehouse.tables import transaction

CART_SESSIONS_SQL = """
SELECT s.session_id, s.customer_id, s.started_at, s.device, s.traffic_source, s.region,
       min(e.ts) FILTER (WHERE e.event_type = 'add_to_cart') AS first_cart_at,
       max(e.ts) AS last_event_at,
       count(*) AS n_events,
       count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS n_cart_adds,
       coalesce(sum(e.price * e.quantity) FILTER (WHERE e.event_type = 'add_to_cart'), 0)
         - coalesce(sum(e.price * e.quantity) FILTER (WHERE e.event_type = 'remove_from_cart'), 0) AS cart_value,
       bool_or(e.event_type = 'begin_checkout') AS reached_checkout,
       bool_or(e.event_type = 'purchase') AS purchased,
       s.partition_date
FROM raw_sessions s JOIN raw_events e
  ON e.session_id = s.session_id AND e.partition_date = s.partition_date
WHERE s.partition_date = $p
GROUP BY ALL
HAVING count(*) FILTER (WHERE e.event_type = 'add_to_cart') > 0
"""


def build_cart_sessions(con: duckdb.DuckDBPyConnection, partition: date) -> dict[str, float]:
    """Replace one partition of `cart_sessions`; return its row count and abandonment rate."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS cart_sessions AS {CART_SESSIONS_SQL} LIMIT 0", {"p": partition}
    )
    with transaction(con):
        con.execute("DELETE FROM cart_sessions WHERE partition_date = $p", {"p": partition})
        con.execute(f"INSERT INTO cart_sessions {CART_SESSIONS_SQL}", {"p": partition})
    n, abandoned = con.execute(
        "SELECT count(*), avg(CASE WHEN purchased THEN 0.0 ELSE 1.0 END) FROM cart_sessions WHERE partition_date = $p",
        {"p": partition},
    ).fetchall()[0]
    return {"cart_sessions": int(n), "abandonment_rate": float(abandoned or 0.0)}
