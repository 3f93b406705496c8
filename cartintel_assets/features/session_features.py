"""Point-in-time features of cart sessions: what the shop knows at the moment it could act.

Each cart session gets a cutoff: the moment checkout begins (or a purchase happens), or
`minutes_after_first_cart` after the first add-to-cart, whichever comes first. Only events
strictly before the cutoff, reference data of earlier days (prices, reviews written before the
cutoff) and the customer's earlier sessions are used, so a feature never reveals the outcome.

One implementation serves batch and online scoring: `compute_features` turns sessions and their
events (numpy columns) and a `FeatureReference` (the day's catalogue and carrier quotes, reviews,
customer history) into feature columns, vectorised, so a day of 100k sessions and one open cart
take the same path. Batch (`session_features`, `day_features`) reads its arrays and reference
from the warehouse; the scoring service builds the reference once from its snapshot and passes a
request's events. `session_facts` (what the whole session showed, for the uplift model) likewise.
No Dagster import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeAlias

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.contracts.schema import EVENT_TYPES, WEIGHT_CLASSES

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
# What the customer's earlier sessions showed, counted as the segmentation's mixture counts them
# (`models.segmentation.history_evidence`): kept beside the features so that a model can place
# the shopper in a segment as of the cart (its segment features), not model inputs themselves
# (the segment features summarise them; nine raw counts more only add noise to the small uplift
# arms). Each: the per-session column of the history it sums.
HISTORY_COUNTS: dict[str, str] = {
    "prior_views": "views",
    "prior_promo_views": "promo_views",
    "prior_search_sessions": "searched",
    "prior_rec_impressions": "rec_impressions",
    "prior_rec_clicks": "rec_clicks",
    "prior_checkout_abandons": "checkout_abandoned",
    "prior_coupon_carts": "coupon_cart",
    "prior_gaps": "gaps",
    "prior_gap_seconds": "seconds",
}
HISTORY_FEATURES: tuple[str, ...] = tuple(HISTORY_COUNTS)
CATEGORICAL_FEATURES: tuple[str, ...] = ("device", "traffic_source", "region")
KEY_COLUMNS: tuple[str, ...] = ("session_id", "customer_id", "started_at", "cutoff_at")


@dataclass(frozen=True)
class CutoffPolicy:
    """When the shop scores a cart: at checkout, or this long after the first add-to-cart."""

    minutes_after_first_cart: float = 10.0


# What customer history needs of each earlier session; batch reads it inline from the raw tables,
# the scoring service from a copy it made with this same query.
SESSION_SUMMARY_SQL = """
SELECT ps.session_id, ps.customer_id, ps.partition_date, ps.started_at,
       max(pe.ts) AS last_event_at,
       bool_or(pe.event_type = 'purchase') AS purchased,
       bool_or(pe.event_type = 'add_to_cart') AS had_cart,
       sum(pe.order_value) AS order_value,
       count(*) AS events,
       count(*) FILTER (WHERE pe.event_type = 'product_view') AS views,
       count(*) FILTER (WHERE pe.event_type = 'product_view' AND pp.on_promotion) AS promo_views,
       bool_or(pe.event_type = 'search') AS searched,
       count(*) FILTER (WHERE pe.event_type = 'recommendation_impression') AS rec_impressions,
       count(*) FILTER (WHERE pe.event_type = 'recommendation_click') AS rec_clicks,
       bool_or(pe.event_type = 'begin_checkout') AS reached_checkout,
       bool_or(pe.event_type = 'coupon_attempt') AS tried_coupon,
       (epoch_us(max(pe.ts)) - epoch_us(min(pe.ts))) / 1000000.0 AS seconds
FROM raw_sessions ps JOIN raw_events pe
  ON pe.session_id = ps.session_id AND pe.partition_date = ps.partition_date
LEFT JOIN raw_products pp ON pp.product_id = pe.product_id AND pp.partition_date = pe.partition_date
WHERE ps.partition_date BETWEEN $history_from AND $history_to
GROUP BY ps.session_id, ps.customer_id, ps.partition_date, ps.started_at
"""

# ---- the one implementation: arrays in, feature columns out -------------------------------------

_US = 1_000_000
_TYPE = {t: i for i, t in enumerate(EVENT_TYPES)}
_WEIGHT_RANK = {w: float(i) for i, w in enumerate(WEIGHT_CLASSES)}


@dataclass(frozen=True)
class Timeline:
    """Rows grouped by a key (product, customer), each group in time order, with running totals
    inside the group: how many rows, and how much of each value, a group had before a moment."""

    keys: dict[Any, int]  # key -> group
    start: np.ndarray  # group g's rows are start[g]:start[g + 1]
    at: np.ndarray  # epoch microseconds
    totals: dict[str, np.ndarray]  # running sums within the group, the row included
    rows: dict[Any, int]  # each row's own id (history: the session) -> its first row

    @classmethod
    def build(
        cls,
        key: np.ndarray,
        at: np.ndarray,
        values: dict[str, np.ndarray],
        row_id: np.ndarray | None = None,
    ) -> Timeline:
        """From rows already sorted by (key, at); `row_id`: the ids of the rows to be found by
        id (None for the others)."""
        codes, uniques = pd.factorize(np.asarray(key, dtype=object), sort=False)
        if len(codes) and np.any(np.diff(codes) < 0):
            raise ValueError("Timeline.build needs rows sorted by key, then time")
        start = np.searchsorted(codes, np.arange(len(uniques) + 1))
        totals = {
            k: pd.Series(np.asarray(v, dtype=float)).groupby(codes).cumsum().to_numpy()
            for k, v in values.items()
        }
        ids: dict[Any, int] = {}
        if row_id is not None:
            for i in np.flatnonzero(pd.notna(row_id)).tolist():
                ids.setdefault(row_id[i], i)
        keys = {k: g for g, k in enumerate(uniques)}
        return cls(keys, start, np.asarray(at, dtype=np.int64), totals, ids)

    def before(self, key: np.ndarray, moment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query, where its group starts and where its rows before `moment` end (the same
        position when the key is unknown or nothing came before)."""
        if not len(self.keys):
            zero = np.zeros(len(key), dtype=np.int64)
            return zero, zero
        g = lookup(self.keys, key)
        lo = np.where(g >= 0, self.start[np.maximum(g, 0)], 0)
        hi = np.where(g >= 0, self.start[np.maximum(g, 0) + 1], 0)
        first = lo.copy()
        if len(key) < 64:  # a request's few queries: one search each costs less than the loop
            at = np.asarray(moment, dtype=np.int64)
            end = [
                a + int(np.searchsorted(self.at[a:b], m))
                for a, b, m in zip(lo, hi, at, strict=True)
            ]
            return first, np.array(end, dtype=np.int64)
        last = len(self.at) - 1
        while True:  # a binary search inside each query's group, all queries at once
            open_ = lo < hi
            if not open_.any():
                return first, lo
            mid = (lo + hi) // 2
            earlier = open_ & (self.at[np.minimum(mid, last)] < moment)
            lo = np.where(earlier, mid + 1, lo)
            hi = np.where(open_ & ~earlier, mid, hi)

    def total(self, name: str, first: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Sum of `name` over rows first:end of their group (first: the group's start)."""
        if not len(self.at):
            return np.zeros(len(end))
        return np.where(end > first, self.totals[name][np.maximum(end - 1, 0)], 0.0)

    def row_value(self, name: str, row: np.ndarray, first: np.ndarray) -> np.ndarray:
        """`name` of single rows (row >= first, its group's start)."""
        run = self.totals[name]
        return run[row] - np.where(row > first, run[np.maximum(row - 1, 0)], 0.0)

    def position(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row (-1: none; an id held twice counts as its first row)."""
        return lookup(self.rows, ids)


def lookup(positions: dict[Any, int], keys: np.ndarray | list[Any]) -> np.ndarray:
    """Each key's position (-1: unknown): a dict on a request's few keys, pandas' map on a
    day's many."""
    if len(keys) < 1000:
        return np.fromiter((positions.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    return pd.Series(keys, dtype=object).map(positions).fillna(-1).to_numpy(dtype=np.int64)


def day_of(us: np.ndarray) -> np.ndarray:
    """The UTC day (datetime.date) of each epoch-microsecond timestamp."""
    return (np.asarray(us, dtype=np.int64) // (86_400 * _US)).astype("datetime64[D]").astype(object)


@dataclass(frozen=True)
class DayCatalogue:
    """One day's reference rows: each product's weight class, promotion flag and median price
    over the 30 days before, and the carrier's quote per (region, weight class)."""

    products: dict[Any, int]
    weight_rank: np.ndarray  # 0 small .. 3 bulky, NaN unknown
    on_promotion: np.ndarray  # 1.0, 0.0, NaN unknown
    median_30d: np.ndarray  # NaN: no price in the 30 days before
    quotes: dict[Any, int]  # "region|weight class" -> row
    shipping_cost: np.ndarray
    delivery_days: np.ndarray


@dataclass
class FeatureReference:
    """Everything a feature reads besides the session's own events."""

    days: dict[date, DayCatalogue]
    reviews: Timeline
    history: Timeline


def _group_first(group: np.ndarray, n: int, values: np.ndarray, fill: Any) -> np.ndarray:
    """Per group 0..n-1, the value of its first row (rows sorted by group); `fill` if none."""
    out = np.full(n, fill, dtype=values.dtype)
    if len(group):
        g, first = np.unique(group, return_index=True)
        out[g] = values[first]
    return out


def _group_last(group: np.ndarray, n: int, values: np.ndarray, fill: Any) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype)
    if len(group):
        rev = group[::-1]
        g, first = np.unique(rev, return_index=True)
        out[g] = values[::-1][first]
    return out


def _sum_or_nan(group: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """SQL's sum: NaNs ignored, NaN when a group has no non-NaN value."""
    ok = ~np.isnan(values)
    total = np.bincount(group[ok], weights=values[ok], minlength=n)
    return np.where(np.bincount(group[ok], minlength=n) > 0, total, np.nan)


def _nan_as(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """`values` with NaN replaced by `fill` (SQL's coalesce)."""
    return np.where(np.isnan(values), fill, values)


def _factorize_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pandas' `factorize(values, sort=True)`: codes into the sorted distinct values, -1 for
    None or NaN. A dict on a request's few values, pandas on a day's many."""
    if len(values) >= 1000:
        codes, uniques = pd.factorize(values, sort=True)
        return codes, np.asarray(uniques, dtype=object)
    uniques = sorted({v for v in values.tolist() if v is not None and v == v})  # not NaN
    position = {v: i for i, v in enumerate(uniques)}
    codes = np.fromiter((position.get(v, -1) for v in values.tolist()), np.int64, len(values))
    return codes, np.array(uniques, dtype=object)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / nullif(b, 0), NaN in, NaN out."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((b == 0) | np.isnan(b), np.nan, a / np.where(b == 0, 1.0, b))


@dataclass(frozen=True)
class _Batch:
    """The sessions in session-id order and their events in (session, time, seq) order; `ev_s`
    is each event's session position."""

    sid: np.ndarray
    cols: dict[str, np.ndarray]
    started: np.ndarray
    ev_s: np.ndarray
    ts: np.ndarray
    etype: np.ndarray
    product: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    @property
    def n(self) -> int:
        return len(self.sid)


def _batch(sessions: dict[str, np.ndarray], events: dict[str, np.ndarray]) -> _Batch:
    """Stage 1: sort the sessions and attach and order their events (others are dropped)."""
    sid = np.asarray(sessions["session_id"], dtype=object)
    order = np.argsort(sid, kind="stable")
    sid = sid[order]
    cols = {k: np.asarray(v)[order] for k, v in sessions.items()}
    ev_sid = np.asarray(events["session_id"], dtype=object)
    ev_s = (  # each event's session (-1: not one of these); building an Index costs ~150 µs
        pd.Index(sid).get_indexer(ev_sid)
        if len(sid) >= 1000
        else lookup({s: i for i, s in enumerate(sid.tolist())}, ev_sid)
    )
    keep = ev_s >= 0
    ts = np.asarray(events["ts"], dtype=np.int64)[keep]
    seq = np.asarray(events["seq"], dtype=np.int64)[keep]
    ev_s = ev_s[keep]
    srt = np.lexsort((seq, ts, ev_s))
    return _Batch(
        sid=sid,
        cols=cols,
        started=np.asarray(cols["started_at"], dtype=np.int64),
        ev_s=ev_s[srt],
        ts=ts[srt],
        etype=lookup(_TYPE, np.asarray(events["event_type"], dtype=object)[keep][srt]),
        product=np.asarray(events["product_id"], dtype=object)[keep][srt],
        price=np.asarray(events["price"], dtype=float)[keep][srt],
        qty=np.asarray(events["quantity"], dtype=float)[keep][srt],
    )


@dataclass(frozen=True)
class _Cutoffs:
    first_cart: np.ndarray  # epoch µs of the first add-to-cart (int64 max: none)
    has_cart: np.ndarray
    cutoff: np.ndarray
    valid: np.ndarray  # a cart session with an add-to-cart before its cutoff: it gets a row


def _cutoffs(b: _Batch, policy: CutoffPolicy) -> _Cutoffs:
    """Stage 2: checkout (or purchase), or the window after the first add-to-cart."""
    window = pd.Timedelta(minutes=policy.minutes_after_first_cart).to_pytimedelta() // timedelta(
        microseconds=1
    )
    never = np.iinfo(np.int64).max
    cart_ev = b.etype == _TYPE["add_to_cart"]
    fc = _group_first(b.ev_s[cart_ev], b.n, b.ts[cart_ev], never)
    has_cart = fc != never
    co = (b.etype == _TYPE["begin_checkout"]) | (b.etype == _TYPE["purchase"])
    checkout = _group_first(b.ev_s[co], b.n, b.ts[co], never)
    cutoff = np.where(has_cart, np.minimum(checkout, np.where(has_cart, fc, 0) + window), never)
    return _Cutoffs(fc, has_cart, cutoff, has_cart & (fc < cutoff))


@dataclass(frozen=True)
class _Seen:
    """The events strictly before each valid session's cutoff."""

    g: np.ndarray  # session position
    t: np.ndarray  # event type code
    ts: np.ndarray
    product: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    pcode: np.ndarray  # index into `products` (-1: no product)
    products: np.ndarray  # the distinct products, sorted


def _seen(b: _Batch, c: _Cutoffs) -> _Seen:
    """Stage 3: keep what the shop had seen at the cutoff. Sorted product codes: a cart's lines
    are summed in product order, whatever else is in the batch."""
    pre = c.valid[b.ev_s] & (b.ts < c.cutoff[b.ev_s])
    product = b.product[pre]
    pcode, products = _factorize_sorted(product)
    return _Seen(
        b.ev_s[pre], b.etype[pre], b.ts[pre], product, b.price[pre], b.qty[pre], pcode, products
    )


def _behaviour(s: _Seen, n: int) -> dict[str, np.ndarray]:
    """Stage 4: counts of what the shopper did before the cutoff."""

    def count(kind: str) -> np.ndarray:
        return np.bincount(s.g[s.t == _TYPE[kind]], minlength=n)

    pcode, width = s.pcode, len(s.products) + 1
    views = (s.t == _TYPE["product_view"]) & (pcode >= 0)
    distinct_views = np.unique(s.g[views] * width + pcode[views])
    return {
        "n_events": np.bincount(s.g, minlength=n),
        "n_views": count("product_view"),
        "n_products_viewed": np.bincount(distinct_views // width, minlength=n),
        "n_searches": count("search"),
        "n_rec_impressions": count("recommendation_impression"),
        "n_rec_clicks": count("recommendation_click"),
        "n_cart_adds": count("add_to_cart"),
        "n_cart_removes": count("remove_from_cart"),
        "coupon_attempts": count("coupon_attempt"),
    }


@dataclass(frozen=True)
class _CartLines:
    """The cart at the cutoff: one row per (session, product) still in it."""

    session: np.ndarray
    qty: np.ndarray
    last_price: np.ndarray
    first_price: np.ndarray
    product: np.ndarray


def _cart_lines(s: _Seen) -> _CartLines:
    """Stage 5: per (session, product) line, quantity and first/last price seen."""
    pcode, products = s.pcode, s.products
    width = len(products) + 1
    lines = pcode >= 0
    line_id, line_of = np.unique(s.g[lines] * width + pcode[lines], return_inverse=True)
    n_lines = len(line_id)
    t, q, pr = s.t[lines], s.qty[lines], s.price[lines]
    signed = np.where(
        t == _TYPE["add_to_cart"],
        _nan_as(q, 1.0),
        np.where(t == _TYPE["remove_from_cart"], -_nan_as(q, 1.0), 0.0),
    )
    line_qty = np.bincount(line_of, weights=signed, minlength=n_lines)
    priced = ~np.isnan(pr)
    # rows are in (session, time) order, so within a line too: first and last priced rows
    last_price = _group_last(line_of[priced], n_lines, pr[priced], np.nan)
    first_price = _group_first(line_of[priced], n_lines, pr[priced], np.nan)
    line_session = (line_id // width).astype(np.int64)
    line_product = (
        products[(line_id % width).astype(np.int64)] if n_lines else np.array([], dtype=object)
    )
    kept = line_qty > 0
    return _CartLines(
        line_session[kept],
        line_qty[kept],
        last_price[kept],
        first_price[kept],
        line_product[kept],
    )


def _cart_prices(
    cart: _CartLines, day: np.ndarray, reference: FeatureReference, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Stage 6: the cart's size, value and price signals against the day's catalogue; also
    whether a session's cart holds a line, and its heaviest known weight class (-1: none)."""
    c_s = cart.session
    weight = np.full(len(c_s), np.nan)
    promo = np.full(len(c_s), np.nan)
    median = np.full(len(c_s), np.nan)
    for d in set(day[c_s]):
        cat = reference.days[d]
        on = day[c_s] == d
        i = lookup(cat.products, cart.product[on])
        known = i >= 0
        weight[on] = np.where(known, cat.weight_rank[np.maximum(i, 0)], np.nan)
        promo[on] = np.where(known, cat.on_promotion[np.maximum(i, 0)], np.nan)
        median[on] = np.where(known, cat.median_30d[np.maximum(i, 0)], np.nan)

    value = cart.qty * _nan_as(cart.last_price)
    cart_value = np.bincount(c_s, weights=value, minlength=n)
    has_cart_row = np.bincount(c_s, minlength=n) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = value * (cart.last_price / np.where(median == 0, np.nan, median) - 1)
    dev = _sum_or_nan(c_s, n, rel)
    base = np.where(~np.isnan(median), value, np.nan)
    change = np.bincount(
        c_s, weights=cart.qty * _nan_as(cart.last_price - cart.first_price), minlength=n
    )
    change_base = np.bincount(c_s, weights=cart.qty * _nan_as(cart.first_price), minlength=n)
    rank = np.full(n, -1.0)
    np.maximum.at(rank, c_s, _nan_as(weight, -1.0))
    prices = {
        "cart_items": np.bincount(c_s, weights=cart.qty, minlength=n),
        "cart_value": cart_value,
        "price_vs_30d_median": _safe_div(dev, _sum_or_nan(c_s, n, base)),
        "price_change_in_session": np.where(has_cart_row, _safe_div(change, change_base), np.nan),
        # unknown (NaN) where the catalogue says nothing of promotions for any carted line
        "carted_on_promotion": np.where(
            np.bincount(c_s, weights=~np.isnan(promo), minlength=n) > 0,
            np.bincount(c_s, weights=_nan_as(promo), minlength=n) > 0,
            np.nan,
        ),
    }
    return prices, has_cart_row, rank


def _shipping(
    b: _Batch,
    day: np.ndarray,
    has_cart_row: np.ndarray,
    rank: np.ndarray,
    cart_value: np.ndarray,
    reference: FeatureReference,
) -> dict[str, np.ndarray]:
    """Stage 7: the quote for the heaviest carted class, in the session's region on its day."""
    shipping_cost = np.full(b.n, np.nan)
    delivery_days = np.full(b.n, np.nan)
    region = np.asarray(b.cols["region"], dtype=object)
    for d in set(day[has_cart_row & (rank >= 0)]):
        cat = reference.days[d]
        on = has_cart_row & (rank >= 0) & (day == d)
        keys = [f"{r}|{WEIGHT_CLASSES[int(k)]}" for r, k in zip(region[on], rank[on], strict=True)]
        i = lookup(cat.quotes, keys)
        shipping_cost[on] = np.where(i >= 0, cat.shipping_cost[np.maximum(i, 0)], np.nan)
        delivery_days[on] = np.where(i >= 0, cat.delivery_days[np.maximum(i, 0)], np.nan)
    return {
        "shipping_cost": shipping_cost,
        "shipping_share": _safe_div(shipping_cost, np.where(has_cart_row, cart_value, np.nan)),
        "delivery_days": delivery_days,
    }


def _reviews(
    cart: _CartLines, cutoff: np.ndarray, reviews: Timeline, n: int
) -> dict[str, np.ndarray]:
    """Stage 8: reviews of the carted products written before the cutoff."""
    first_r, end_r = reviews.before(cart.product, cutoff[cart.session])
    r_count = np.bincount(cart.session, weights=end_r - first_r, minlength=n)
    r_sum = np.bincount(cart.session, weights=reviews.total("rating", first_r, end_r), minlength=n)
    return {
        "review_rating": _safe_div(r_sum, np.where(r_count > 0, r_count, np.nan)),
        # unknown, not zero, for a shop whose data has no reviews at all (e.g. a bare event log)
        "review_count": r_count if len(reviews.at) else np.full(n, np.nan),
    }


def _history(b: _Batch, h: Timeline) -> dict[str, np.ndarray]:
    """Stage 9: the customer's earlier sessions, as they stood when this session started."""
    n, started = b.n, b.started
    customer = np.asarray(b.cols["customer_id"], dtype=object)
    first_h, end_h = h.before(customer, started)
    own = h.position(b.sid) if len(h.at) else np.full(n, -1)
    mine = (own >= first_h) & (own < end_h)  # the session itself, had it ended before it began
    own_c = np.maximum(own, 0)

    def prior(name: str) -> np.ndarray:
        total = h.total(name, first_h, end_h)
        if not len(h.at):
            return total
        return total - np.where(mine, h.row_value(name, own_c, first_h), 0.0)

    sessions_before = (end_h - first_h) - mine
    last_idx = np.where(mine & (own == end_h - 1), end_h - 2, end_h - 1)
    has_last = last_idx >= first_h
    last_prior = h.at[np.maximum(last_idx, 0)] if len(h.at) else np.zeros(n, dtype=np.int64)
    carts_before = prior("had_cart")
    return {
        "returning_customer": (sessions_before > 0).astype(np.int64),
        "days_since_last_session": np.where(
            has_last, ((started // _US) - (last_prior // _US)) / 86400.0, np.nan
        ),
        "prior_sessions": sessions_before.astype(np.int64),
        "prior_orders": prior("purchased").astype(np.int64),
        "prior_revenue": prior("order_value").astype(float),
        "prior_cart_sessions": carts_before.astype(np.int64),
        "prior_abandonment_rate": _safe_div(
            prior("abandoned").astype(float), carts_before.astype(float)
        ),
        **{
            f: prior(c).astype(float if f == "prior_gap_seconds" else np.int64)
            for f, c in HISTORY_COUNTS.items()
        },
    }


def compute_features(
    sessions: dict[str, np.ndarray],
    events: dict[str, np.ndarray],
    reference: FeatureReference,
    policy: CutoffPolicy,
) -> dict[str, np.ndarray]:
    """Feature columns (KEY_COLUMNS, NUMERIC_FEATURES, CATEGORICAL_FEATURES, HISTORY_FEATURES, in
    that order) of the cart sessions in `sessions`, in session-id order, from their `events`.

    `sessions`: session_id, customer_id, started_at (epoch µs), device, traffic_source, region.
    `events`: session_id, ts (epoch µs), seq, event_type, product_id (None: none), price and
    quantity (NaN: none). Sessions without an add-to-cart before checkout get no row.

    Stages: order the batch, find each cutoff, keep what was seen before it, then behaviour,
    the cart at the cutoff and its prices, shipping, reviews and the customer's history.
    """
    b = _batch(sessions, events)
    c = _cutoffs(b, policy)
    seen = _seen(b, c)
    cart = _cart_lines(seen)
    day = day_of(b.started)
    prices, has_cart_row, rank = _cart_prices(cart, day, reference, b.n)
    last_ts = _group_last(seen.g, b.n, seen.ts, 0)
    started = b.started
    columns = {
        "session_id": b.sid,
        "customer_id": np.asarray(b.cols["customer_id"], dtype=object),
        "started_at": started,
        "cutoff_at": c.cutoff,
        **_behaviour(seen, b.n),
        **prices,
        "secs_in_session": ((c.cutoff // 1000) - (started // 1000)) / 1000.0,
        "secs_since_first_cart": (
            (last_ts // 1000) - (np.where(c.has_cart, c.first_cart, 0) // 1000)
        )
        / 1000.0,
        **_shipping(b, day, has_cart_row, rank, prices["cart_value"], reference),
        **_reviews(cart, c.cutoff, reference.reviews, b.n),
        "hour": (started // (3600 * _US)) % 24,
        "weekday": ((started // (86400 * _US)) + 3) % 7 + 1,  # ISO: Monday 1 (1970-01-01: Thu)
        **_history(b, reference.history),
        "device": np.asarray(b.cols["device"], dtype=object),
        "traffic_source": np.asarray(b.cols["traffic_source"], dtype=object),
        "region": np.asarray(b.cols["region"], dtype=object),
    }
    order = (*KEY_COLUMNS, *NUMERIC_FEATURES, *CATEGORICAL_FEATURES, *HISTORY_FEATURES)
    return {k: columns[k][c.valid] for k in order}


def compute_session_facts(events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per session in `events` (session-id order), what the whole session showed, cutoff or not:
    coupon attempts, whether it reached checkout or saw a shipping quote, its events, its
    length in whole seconds, and its last event (epoch µs)."""
    codes, sids = _factorize_sorted(np.asarray(events["session_id"], dtype=object))
    n = len(sids)
    ts = np.asarray(events["ts"], dtype=np.int64)
    etype = lookup(_TYPE, np.asarray(events["event_type"], dtype=object))

    def count(kind: str) -> np.ndarray:
        return np.bincount(codes[etype == _TYPE[kind]], minlength=n)

    first = np.full(n, np.iinfo(np.int64).max)
    last = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first, codes, ts)
    np.maximum.at(last, codes, ts)
    return {
        "session_id": np.asarray(sids, dtype=object),
        "session_coupon_attempts": count("coupon_attempt"),
        "session_reached_checkout": (count("begin_checkout") > 0).astype(np.int64),
        "session_saw_shipping_quote": (count("shipping_quote_shown") > 0).astype(np.int64),
        "session_events": np.bincount(codes, minlength=n),
        "session_seconds": (last // _US) - (first // _US),
        "session_ended_at": last,
    }


# ---- the reference, from a warehouse or the service's snapshot -------------------------------------

_CATALOGUE_SQL = """
WITH today AS (
    SELECT product_id, weight_class, on_promotion FROM raw_products WHERE partition_date = $day
), median AS (
    SELECT product_id, median(price) AS median_30d FROM raw_products
    WHERE partition_date < $day AND partition_date >= $day - 30 GROUP BY product_id
)
SELECT product_id, today.weight_class,
       CASE WHEN today.on_promotion IS NULL THEN 'NaN'::DOUBLE ELSE today.on_promotion::DOUBLE END
         AS on_promotion,
       coalesce(median.median_30d, 'NaN'::DOUBLE) AS median_30d
FROM today FULL OUTER JOIN median USING (product_id)
WHERE product_id IS NOT NULL
"""
_QUOTES_SQL = """
SELECT region || '|' || weight_class AS quote, shipping_cost, delivery_days::DOUBLE AS delivery_days
FROM raw_shipping_quotes
WHERE partition_date = $day AND region IS NOT NULL AND weight_class IS NOT NULL
"""
_REVIEWS_SQL = """
SELECT product_id, epoch_us(ts) AS at_us, rating::DOUBLE AS rating FROM raw_reviews
WHERE product_id IS NOT NULL AND ts IS NOT NULL AND rating IS NOT NULL
ORDER BY product_id, at_us
"""
_HISTORY_SQL = """
SELECT customer_id, epoch_us(last_event_at) AS at_us,
       -- a session that ended before it started (events stamped before its start) would count
       -- in its own history: only these need finding by id
       CASE WHEN last_event_at < started_at THEN session_id END AS ended_before_start,
       coalesce(purchased, FALSE)::DOUBLE AS purchased, coalesce(had_cart, FALSE)::DOUBLE AS had_cart,
       coalesce(had_cart AND NOT purchased, FALSE)::DOUBLE AS abandoned,
       coalesce(order_value, 0) AS order_value,
       coalesce(views, 0)::DOUBLE AS views, coalesce(promo_views, 0)::DOUBLE AS promo_views,
       coalesce(searched, FALSE)::DOUBLE AS searched,
       coalesce(rec_impressions, 0)::DOUBLE AS rec_impressions,
       coalesce(rec_clicks, 0)::DOUBLE AS rec_clicks,
       coalesce(had_cart AND NOT purchased AND reached_checkout, FALSE)::DOUBLE
         AS checkout_abandoned,
       coalesce(had_cart AND tried_coupon, FALSE)::DOUBLE AS coupon_cart,
       greatest(coalesce(events, 1) - 1, 0)::DOUBLE AS gaps,
       coalesce(seconds, 0)::DOUBLE AS seconds
FROM {history} WHERE partition_date BETWEEN $history_from AND $history_to
  AND customer_id IS NOT NULL AND last_event_at IS NOT NULL {of_customers}
ORDER BY customer_id, at_us, session_id
"""


# runs one of the reference queries below (DuckDB's dialect, $name parameters) on an engine and
# returns its columns as `_columns` does: DuckDB here, Spark in engines/spark.py
Query: TypeAlias = Callable[[str, Mapping[str, Any]], dict[str, np.ndarray]]


def duckdb_query(con: duckdb.DuckDBPyConnection) -> Query:
    """Reference queries run on a DuckDB connection (the warehouse, or the service's snapshot)."""
    return lambda sql, params: _columns(con.sql(sql, params=dict(params) or None))


def _columns(rel: duckdb.DuckDBPyRelation) -> dict[str, np.ndarray]:
    """A relation as numpy columns: NULL is None in text columns and NaN in numeric ones."""
    out = {}
    for k, v in rel.fetchnumpy().items():
        if isinstance(v, np.ma.MaskedArray):
            if v.dtype == object:  # (filled(None) would fill with the default, '?')
                text = np.asarray(v.data, dtype=object).copy()
                text[np.ma.getmaskarray(v)] = None
                v = text
            else:
                v = np.ma.filled(v.astype(float), np.nan)
        out[k] = np.asarray(v)
    return out


def day_catalogue(query: Query, day: date) -> DayCatalogue:
    """The catalogue and carrier quotes of `day` (`raw_products`, `raw_shipping_quotes`)."""
    p = query(_CATALOGUE_SQL, {"day": day})
    q = query(_QUOTES_SQL, {"day": day})
    rank = [_WEIGHT_RANK.get(w, np.nan) if w is not None else np.nan for w in p["weight_class"]]
    return DayCatalogue(
        products={k: i for i, k in enumerate(p["product_id"])},
        weight_rank=np.asarray(rank, dtype=float),
        on_promotion=p["on_promotion"].astype(float),
        median_30d=p["median_30d"].astype(float),
        quotes={k: i for i, k in enumerate(q["quote"])},
        shipping_cost=q["shipping_cost"].astype(float),
        delivery_days=q["delivery_days"].astype(float),
    )


def reviews_timeline(query: Query) -> Timeline:
    r = query(_REVIEWS_SQL, {})
    return Timeline.build(r["product_id"], r["at_us"], {"rating": r["rating"]})


def history_timeline(
    query: Query,
    history_from: date,
    history_to: date,
    history: str | None = None,
    customers: str | None = None,
) -> Timeline:
    """Customers' sessions between the two days, summarised by SESSION_SUMMARY_SQL from
    `raw_sessions`/`raw_events`, or read from table `history` that holds those summaries; only
    the customers in table `customers` (a batch's sessions) if given."""
    sql = _HISTORY_SQL.format(
        history=history or f"({SESSION_SUMMARY_SQL})",
        of_customers=f"AND customer_id IN (SELECT customer_id FROM {customers})"
        if customers
        else "",
    )
    h = query(sql, {"history_from": history_from, "history_to": history_to})
    values = {
        k: h[k]
        for k in ("purchased", "had_cart", "abandoned", "order_value", *HISTORY_COUNTS.values())
    }
    return Timeline.build(h["customer_id"], h["at_us"], values, h["ended_before_start"])


def feature_reference(
    query: Query,
    days: list[date],
    history_from: date,
    history_to: date,
    history: str | None = None,
    customers: str | None = None,
    reviews: Timeline | None = None,
) -> FeatureReference:
    """What the features of sessions started on `days` read besides their events (the history
    of the customers in table `customers` only, if given; `reviews`: a timeline already read,
    as it does not depend on the day)."""
    return FeatureReference(
        days={d: day_catalogue(query, d) for d in days},
        reviews=reviews if reviews is not None else reviews_timeline(query),
        history=history_timeline(query, history_from, history_to, history, customers),
    )


# ---- batch ---------------------------------------------------------------------------------------

# the columns' SQL types (as the feature SQL typed them before): counts are BIGINT
_NOT_BIGINT: dict[str, str] = {
    "session_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "started_at": "TIMESTAMP",
    "cutoff_at": "TIMESTAMP",
    "cart_items": "HUGEINT",
    "carted_on_promotion": "INTEGER",
    "delivery_days": "INTEGER",
    "returning_customer": "INTEGER",
    **dict.fromkeys(CATEGORICAL_FEATURES, "VARCHAR"),
    **dict.fromkeys(
        (
            "cart_value",
            "secs_in_session",
            "secs_since_first_cart",
            "price_vs_30d_median",
            "price_change_in_session",
            "shipping_cost",
            "shipping_share",
            "review_rating",
            "days_since_last_session",
            "prior_revenue",
            "prior_abandonment_rate",
            "prior_gap_seconds",
        ),
        "DOUBLE",
    ),
}
FEATURE_TYPES: dict[str, str] = {
    c: _NOT_BIGINT.get(c, "BIGINT")
    for c in (*KEY_COLUMNS, *NUMERIC_FEATURES, *CATEGORICAL_FEATURES, *HISTORY_FEATURES)
}

_EVENTS_SQL = """
SELECT session_id, epoch_us(ts) AS ts, seq, event_type, product_id,
       coalesce(price, 'NaN'::DOUBLE) AS price, coalesce(quantity::DOUBLE, 'NaN'::DOUBLE) AS quantity
FROM {events}
"""
_SESSIONS_SQL = """
SELECT session_id, customer_id, epoch_us(started_at) AS started_at, device, traffic_source, region
FROM {sessions}
"""


def feature_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Feature columns as a frame, timestamps as timestamps."""
    frame = pd.DataFrame(columns)
    for c in ("started_at", "cutoff_at"):
        frame[c] = pd.to_datetime(frame[c], unit="us")
    return frame


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

    Reference data (`raw_products`, `raw_shipping_quotes`, `raw_reviews`) is read from the same
    connection, and customer history from the earlier sessions between `history_from` and
    `history_to` (see `history_timeline`). Sessions without an add-to-cart before checkout get no
    row. The rows are also kept, with their SQL types (FEATURE_TYPES), in the temporary table
    `into`.
    """
    from cartintel_assets.warehouse.tables import typed_temp_table

    ev = _columns(con.sql(_EVENTS_SQL.format(events=events)))
    s = _columns(con.sql(_SESSIONS_SQL.format(sessions=sessions)))
    days = sorted(set(day_of(s["started_at"])))
    reference = feature_reference(
        duckdb_query(con), days, history_from, history_to, history, sessions
    )
    frame = feature_frame(compute_features(s, ev, reference, policy))
    typed_temp_table(con, frame, FEATURE_TYPES, into)
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
