"""Cart sessions: one row per session that put something in the cart, with its in-session outcome.

The conformed table later feature and label code starts from. No Dagster import.
"""

from __future__ import annotations

from datetime import date

import duckdb

from cartintel_assets.warehouse.tables import transaction


def cart_value_sql(day_param: str) -> str:
    """The one definition of a cart's value (cart sessions, labels; the features use the same
    rule at their cutoff): per product line, the units added minus removed (a missing quantity
    is one unit) times the last price the session showed for it, summed over the lines still in
    the cart. One row per session of the day `$<day_param>` with a cart line."""
    return f"""
SELECT session_id, coalesce(sum(qty * price) FILTER (WHERE qty > 0), 0) AS cart_value
FROM (SELECT session_id, product_id,
             sum(CASE event_type WHEN 'add_to_cart' THEN coalesce(quantity, 1)
                                 WHEN 'remove_from_cart' THEN -coalesce(quantity, 1)
                                 ELSE 0 END) AS qty,
             arg_max(price, seq) FILTER (WHERE price IS NOT NULL) AS price
      FROM raw_events WHERE partition_date = ${day_param} AND product_id IS NOT NULL
      GROUP BY ALL)
GROUP BY session_id
"""


CART_SESSIONS_SQL = f"""
SELECT s.session_id, s.customer_id, s.started_at, s.device, s.traffic_source, s.region,
       min(e.ts) FILTER (WHERE e.event_type = 'add_to_cart') AS first_cart_at,
       max(e.ts) AS last_event_at,
       count(*) AS n_events,
       count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS n_cart_adds,
       coalesce(any_value(v.cart_value), 0) AS cart_value,
       bool_or(e.event_type = 'begin_checkout') AS reached_checkout,
       bool_or(e.event_type = 'purchase') AS purchased,
       s.partition_date
FROM raw_sessions s JOIN raw_events e
  ON e.session_id = s.session_id AND e.partition_date = s.partition_date
LEFT JOIN ({cart_value_sql("p")}) v ON v.session_id = s.session_id
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
