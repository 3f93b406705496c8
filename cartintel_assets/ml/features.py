"""Point-in-time features of cart sessions: what the shop knows at the moment it could act.

Each cart session gets a cutoff: the moment checkout begins (or a purchase happens), or
`minutes_after_first_cart` after the first add-to-cart, whichever comes first. Only events
strictly before the cutoff, reference data of earlier days (prices, reviews written before the
cutoff) and the customer's earlier sessions are used, so a feature never reveals the outcome.

One implementation serves batch and online scoring: `session_features` takes the names of the
events and sessions to featurise (warehouse tables for a partition, or a request's events
registered as a table) and reads the reference tables from the same connection.
No Dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pandas as pd

# The columns a model may use, in order; identifiers and the cutoff are kept beside them.
NUMERIC_FEATURES: tuple[str, ...] = (
    "n_events",
    "n_views",
    "n_products_viewed",
    "n_searches",
    "n_rec_impressions",
    "n_rec_clicks",
    "n_cart_adds",
    "n_cart_removes",
    "cart_items",
    "cart_value",
    "secs_in_session",
    "secs_since_first_cart",
    "coupon_attempts",
    "price_vs_30d_median",
    "price_change_in_session",
    "carted_on_promotion",
    "shipping_cost",
    "shipping_share",
    "delivery_days",
    "review_rating",
    "review_count",
    "hour",
    "weekday",
    "returning_customer",
    "days_since_last_session",
    "prior_sessions",
    "prior_orders",
    "prior_revenue",
    "prior_cart_sessions",
    "prior_abandonment_rate",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("device", "traffic_source", "region")
KEY_COLUMNS: tuple[str, ...] = ("session_id", "customer_id", "started_at", "cutoff_at")


@dataclass(frozen=True)
class CutoffPolicy:
    """When the shop scores a cart: at checkout, or this long after the first add-to-cart."""

    minutes_after_first_cart: float = 10.0


# What customer history needs of each earlier session; batch reads it inline from the raw tables,
# the scoring service from a copy it made with this same query.
SESSION_SUMMARY_SQL = """
SELECT ps.session_id, ps.customer_id, ps.partition_date, max(pe.ts) AS last_event_at,
       bool_or(pe.event_type = 'purchase') AS purchased,
       bool_or(pe.event_type = 'add_to_cart') AS had_cart,
       sum(pe.order_value) AS order_value
FROM raw_sessions ps JOIN raw_events pe
  ON pe.session_id = ps.session_id AND pe.partition_date = ps.partition_date
WHERE ps.partition_date BETWEEN $history_from AND $history_to
GROUP BY ps.session_id, ps.customer_id, ps.partition_date
"""

_SQL = """
WITH ev AS (SELECT * FROM {events}),
s AS (SELECT * FROM {sessions}),
bounds AS (
    SELECT session_id,
           min(ts) FILTER (WHERE event_type = 'add_to_cart') AS first_cart_at,
           min(ts) FILTER (WHERE event_type IN ('begin_checkout', 'purchase')) AS checkout_at
    FROM ev GROUP BY session_id
),
cut AS (
    SELECT session_id, first_cart_at,
           least(coalesce(checkout_at, first_cart_at + $window), first_cart_at + $window) AS cutoff_at
    FROM bounds
    WHERE first_cart_at IS NOT NULL AND first_cart_at < coalesce(checkout_at, first_cart_at + $window)
),
pre AS (  -- the events the shop has seen at the cutoff
    SELECT ev.*, cut.cutoff_at, cut.first_cart_at FROM ev JOIN cut USING (session_id)
    WHERE ev.ts < cut.cutoff_at
),
behaviour AS (
    SELECT session_id,
           count(*) AS n_events,
           count(*) FILTER (WHERE event_type = 'product_view') AS n_views,
           count(DISTINCT product_id) FILTER (WHERE event_type = 'product_view') AS n_products_viewed,
           count(*) FILTER (WHERE event_type = 'search') AS n_searches,
           count(*) FILTER (WHERE event_type = 'recommendation_impression') AS n_rec_impressions,
           count(*) FILTER (WHERE event_type = 'recommendation_click') AS n_rec_clicks,
           count(*) FILTER (WHERE event_type = 'add_to_cart') AS n_cart_adds,
           count(*) FILTER (WHERE event_type = 'remove_from_cart') AS n_cart_removes,
           count(*) FILTER (WHERE event_type = 'coupon_attempt') AS coupon_attempts,
           date_diff('millisecond', min(first_cart_at), max(ts)) / 1000.0 AS secs_since_first_cart
    FROM pre GROUP BY session_id
),
cart_lines AS (  -- the cart at the cutoff, with the latest and first price seen in the session
    SELECT session_id, product_id,
           sum(CASE WHEN event_type = 'add_to_cart' THEN coalesce(quantity, 1)
                    WHEN event_type = 'remove_from_cart' THEN -coalesce(quantity, 1) ELSE 0 END) AS qty,
           arg_max(price, ts) FILTER (WHERE price IS NOT NULL) AS last_price,
           arg_min(price, ts) FILTER (WHERE price IS NOT NULL) AS first_price
    FROM pre WHERE product_id IS NOT NULL GROUP BY session_id, product_id
),
cart AS (
    SELECT c.*, s.region, CAST(s.started_at AS DATE) AS day
    FROM cart_lines c JOIN s USING (session_id) WHERE c.qty > 0
),
catalogue AS (  -- each carted product on the session's day, and its median price over the 30 days before
    SELECT cart.session_id, cart.product_id, cart.qty, cart.last_price, cart.first_price,
           today.weight_class, today.on_promotion,
           (SELECT median(h.price) FROM raw_products h
             WHERE h.product_id = cart.product_id AND h.partition_date < cart.day
               AND h.partition_date >= cart.day - 30) AS median_30d
    FROM cart LEFT JOIN raw_products today
      ON today.product_id = cart.product_id AND today.partition_date = cart.day
),
reviews AS (
    SELECT cart.session_id, avg(r.rating) AS review_rating, count(r.rating) AS review_count
    FROM cart JOIN cut USING (session_id)
    LEFT JOIN raw_reviews r ON r.product_id = cart.product_id AND r.ts < cut.cutoff_at
    GROUP BY cart.session_id
),
friction AS (
    SELECT session_id,
           sum(qty) AS cart_items,
           sum(qty * coalesce(last_price, 0)) AS cart_value,
           sum(qty * coalesce(last_price, 0) * (last_price / nullif(median_30d, 0) - 1))
             / nullif(sum(qty * coalesce(last_price, 0)) FILTER (WHERE median_30d IS NOT NULL), 0) AS price_vs_30d_median,
           sum(qty * coalesce(last_price - first_price, 0)) / nullif(sum(qty * coalesce(first_price, 0)), 0) AS price_change_in_session,
           CAST(bool_or(coalesce(on_promotion, FALSE)) AS INTEGER) AS carted_on_promotion,
           max(CASE weight_class WHEN 'small' THEN 0 WHEN 'medium' THEN 1 WHEN 'large' THEN 2
                                 WHEN 'bulky' THEN 3 END) AS weight_rank
    FROM catalogue GROUP BY session_id
),
shipping AS (
    SELECT f.session_id, q.shipping_cost, q.delivery_days
    FROM friction f JOIN s USING (session_id)
    LEFT JOIN raw_shipping_quotes q
      ON q.region = s.region AND q.partition_date = CAST(s.started_at AS DATE)
     AND q.weight_class = (['small', 'medium', 'large', 'bulky'])[f.weight_rank + 1]
),
history AS (  -- the customer's earlier sessions, as they stood when this session started
    SELECT cur.session_id,
           count(p.session_id) AS prior_sessions,
           count(p.session_id) FILTER (WHERE p.purchased) AS prior_orders,
           coalesce(sum(p.order_value), 0) AS prior_revenue,
           count(p.session_id) FILTER (WHERE p.had_cart) AS prior_cart_sessions,
           count(p.session_id) FILTER (WHERE p.had_cart AND NOT p.purchased)
             / nullif(count(p.session_id) FILTER (WHERE p.had_cart), 0) AS prior_abandonment_rate,
           date_diff('second', max(p.last_event_at), min(cur.started_at)) / 86400.0 AS days_since_last_session
    FROM s cur JOIN cut USING (session_id)
    LEFT JOIN (
        SELECT * FROM {history} WHERE partition_date BETWEEN $history_from AND $history_to
    ) p ON p.customer_id = cur.customer_id AND p.session_id <> cur.session_id
       AND p.last_event_at < cur.started_at
    GROUP BY cur.session_id
)
SELECT s.session_id, s.customer_id, s.started_at, cut.cutoff_at,
       b.n_events, b.n_views, b.n_products_viewed, b.n_searches, b.n_rec_impressions,
       b.n_rec_clicks, b.n_cart_adds, b.n_cart_removes,
       coalesce(f.cart_items, 0) AS cart_items, coalesce(f.cart_value, 0) AS cart_value,
       date_diff('millisecond', s.started_at, cut.cutoff_at) / 1000.0 AS secs_in_session,
       b.secs_since_first_cart, b.coupon_attempts,
       f.price_vs_30d_median, f.price_change_in_session,
       coalesce(f.carted_on_promotion, 0) AS carted_on_promotion,
       sh.shipping_cost, sh.shipping_cost / nullif(f.cart_value, 0) AS shipping_share, sh.delivery_days,
       r.review_rating, coalesce(r.review_count, 0) AS review_count,
       hour(s.started_at) AS hour, isodow(s.started_at) AS weekday,
       CAST(coalesce(h.prior_sessions, 0) > 0 AS INTEGER) AS returning_customer,
       h.days_since_last_session, coalesce(h.prior_sessions, 0) AS prior_sessions,
       coalesce(h.prior_orders, 0) AS prior_orders, coalesce(h.prior_revenue, 0) AS prior_revenue,
       coalesce(h.prior_cart_sessions, 0) AS prior_cart_sessions, h.prior_abandonment_rate,
       s.device, s.traffic_source, s.region
FROM s JOIN cut USING (session_id)
JOIN behaviour b USING (session_id)
LEFT JOIN friction f USING (session_id)
LEFT JOIN shipping sh USING (session_id)
LEFT JOIN reviews r USING (session_id)
LEFT JOIN history h USING (session_id)
ORDER BY s.session_id
"""


def session_features(
    con: duckdb.DuckDBPyConnection,
    events: str,
    sessions: str,
    policy: CutoffPolicy,
    history_from: date,
    history_to: date,
    into: str = "_session_features",
    history: str | None = None,
) -> pd.DataFrame:
    """Features of the cart sessions in table `sessions` from their events in table `events`.

    Reference tables (`raw_products`, `raw_shipping_quotes`, `raw_reviews`) are read from the
    same connection, and customer history from the earlier sessions between `history_from` and
    `history_to`: summarised from `raw_sessions`/`raw_events` by SESSION_SUMMARY_SQL, or read
    from table `history` that holds those summaries already. Sessions without an add-to-cart
    before checkout get no row. The rows are also kept, with their SQL types, in the temporary
    table `into`.
    """
    sql = _SQL.format(
        events=events, sessions=sessions, history=history or f"({SESSION_SUMMARY_SQL})"
    )
    params = {
        "window": pd.Timedelta(minutes=policy.minutes_after_first_cart).to_pytimedelta(),
        "history_from": history_from,
        "history_to": history_to,
    }
    con.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS {sql}", params)
    return con.table(into).df()


def day_features(
    con: duckdb.DuckDBPyConnection, day: date, policy: CutoffPolicy, history_days: int = 365
) -> pd.DataFrame:
    """Features of the cart sessions that started on `day`, from the warehouse (batch scoring)."""
    p = f"DATE '{day.isoformat()}'"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _day_events AS SELECT * FROM raw_events WHERE partition_date = {p}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _day_sessions AS SELECT * FROM raw_sessions WHERE partition_date = {p}"
    )
    return session_features(
        con, "_day_events", "_day_sessions", policy, day - timedelta(days=history_days), day
    )
