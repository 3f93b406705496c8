"""Reason codes as a merchant says them: "price 12 % above its 30-day median", not
`price_vs_30d_median`, each told apart as a friction the shop can act on (price, shipping,
delivery, reviews) or plain behaviour. One definition, read by the scoring service, the
dashboard and the demo's summary. No Dagster, no web code."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    HISTORY_FEATURES,
    NUMERIC_FEATURES,
)
from cartintel_assets.models.segmentation import SEGMENT_FEATURES

# the frictions a shop can change; the rest describe the shopper
ACTIONABLE: tuple[str, ...] = ("price", "shipping", "delivery", "reviews")
BEHAVIOUR = "behaviour"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Reason:
    """One feature raising a cart's risk, in words."""

    code: str  # the feature's name, as the model knows it
    kind: str  # price | shipping | delivery | reviews | behaviour
    text: str

    @property
    def actionable(self) -> bool:
        return self.kind in ACTIONABLE


def _pct(v: float) -> str:
    p = abs(v) * 100
    return f"{p:.1f} %" if 0 < p < 1 else f"{p:.0f} %"


def _above(v: float, what: str) -> str:
    return f"{_pct(v)} {'above' if v >= 0 else 'below'} {what}"


def _n(v: float, one: str, many: str) -> str:
    n = int(round(v))
    return f"{n:,} {one if n == 1 else many}"


def _minutes(v: float) -> str:
    return f"{v / 60:.0f} min" if v < 5400 else f"{v / 3600:.1f} h"


_TEXT: dict[str, tuple[str, Callable[[Any], str]]] = {
    "price_vs_30d_median": ("price", lambda v: f"price {_above(v, 'its 30-day median')}"),
    "price_change_in_session": (
        "price",
        lambda v: (
            f"price {'rose' if v > 0 else 'fell' if v < 0 else 'unchanged'}"
            + (f" {_pct(v)} during the visit" if v else " during the visit")
        ),
    ),
    "carted_on_promotion": (
        "price",
        lambda v: "carted on promotion" if v else "carted at full price",
    ),
    "coupon_attempts": ("price", lambda v: f"tried {_n(v, 'coupon', 'coupons')}"),
    "shipping_cost": ("shipping", lambda v: f"shipping costs {v:,.2f}"),
    "shipping_share": ("shipping", lambda v: f"shipping is {_pct(v)} of the cart value"),
    "delivery_days": ("delivery", lambda v: f"delivery takes {_n(v, 'day', 'days')}"),
    "review_rating": ("reviews", lambda v: f"reviews average {v:.1f} stars"),
    "review_count": ("reviews", lambda v: f"{_n(v, 'review', 'reviews')} of the carted items"),
    "n_events": (BEHAVIOUR, lambda v: f"{_n(v, 'action', 'actions')} in the visit"),
    "n_views": (BEHAVIOUR, lambda v: f"{_n(v, 'page', 'pages')} viewed"),
    "n_products_viewed": (BEHAVIOUR, lambda v: f"compared {_n(v, 'product', 'products')}"),
    "n_searches": (BEHAVIOUR, lambda v: f"searched {_n(v, 'time', 'times')}"),
    "n_rec_impressions": (
        BEHAVIOUR,
        lambda v: f"shown {_n(v, 'recommendation', 'recommendations')}",
    ),
    "n_rec_clicks": (
        BEHAVIOUR,
        lambda v: f"clicked {_n(v, 'recommendation', 'recommendations')}",
    ),
    "n_cart_adds": (BEHAVIOUR, lambda v: f"added to the cart {_n(v, 'time', 'times')}"),
    "n_cart_removes": (BEHAVIOUR, lambda v: f"removed {_n(v, 'item', 'items')} from the cart"),
    "cart_items": (BEHAVIOUR, lambda v: f"{_n(v, 'item', 'items')} in the cart"),
    "cart_value": (BEHAVIOUR, lambda v: f"cart worth {v:,.2f}"),
    "secs_in_session": (BEHAVIOUR, lambda v: f"{_minutes(v)} on the site so far"),
    "secs_since_first_cart": (BEHAVIOUR, lambda v: f"first item carted {_minutes(v)} ago"),
    "hour": (BEHAVIOUR, lambda v: f"shopping at {int(v):02d}:00 UTC"),
    "weekday": (BEHAVIOUR, lambda v: f"shopping on a {WEEKDAYS[(int(v) - 1) % 7]}"),  # ISO
    "returning_customer": (
        BEHAVIOUR,
        lambda v: "a returning customer" if v else "a first-time customer",
    ),
    "days_since_last_session": (
        BEHAVIOUR,
        lambda v: f"last visit {_n(v, 'day', 'days')} ago",
    ),
    "prior_sessions": (BEHAVIOUR, lambda v: f"{_n(v, 'earlier visit', 'earlier visits')}"),
    "prior_orders": (BEHAVIOUR, lambda v: f"{_n(v, 'earlier order', 'earlier orders')}"),
    "prior_revenue": (BEHAVIOUR, lambda v: f"spent {v:,.2f} before"),
    "prior_cart_sessions": (BEHAVIOUR, lambda v: f"{_n(v, 'earlier cart', 'earlier carts')}"),
    "prior_abandonment_rate": (BEHAVIOUR, lambda v: f"left {_pct(v)} of earlier carts"),
    "prior_views": (BEHAVIOUR, lambda v: f"{_n(v, 'page', 'pages')} viewed on earlier visits"),
    "prior_promo_views": (
        BEHAVIOUR,
        lambda v: f"{_n(v, 'promotion', 'promotions')} viewed on earlier visits",
    ),
    "prior_search_sessions": (
        BEHAVIOUR,
        lambda v: f"searched on {_n(v, 'earlier visit', 'earlier visits')}",
    ),
    "prior_rec_impressions": (
        BEHAVIOUR,
        lambda v: f"shown {_n(v, 'recommendation', 'recommendations')} before",
    ),
    "prior_rec_clicks": (
        BEHAVIOUR,
        lambda v: f"clicked {_n(v, 'recommendation', 'recommendations')} before",
    ),
    "prior_checkout_abandons": (
        BEHAVIOUR,
        lambda v: f"left checkout {_n(v, 'time', 'times')} before",
    ),
    "prior_coupon_carts": (
        BEHAVIOUR,
        lambda v: f"tried coupons on {_n(v, 'earlier cart', 'earlier carts')}",
    ),
    "prior_gaps": (BEHAVIOUR, lambda v: f"{_n(v, 'action', 'actions')} on earlier visits"),
    "prior_gap_seconds": (BEHAVIOUR, lambda v: f"{_minutes(v)} on earlier visits"),
    "device": (BEHAVIOUR, lambda v: f"shopping on {v}"),
    "traffic_source": (BEHAVIOUR, lambda v: f"arrived from {str(v).replace('_', ' ')}"),
    "region": (BEHAVIOUR, lambda v: f"shopping from {v}"),
}
# the shopper's segment as of the cart (`models.segmentation.segment_features`): what shoppers
# like them do, and what it is called when a table kept the code but not the value
_SEGMENT: dict[str, tuple[str, Callable[[Any], str]]] = {
    "segment_search_rate": ("searching", lambda v: f"search on {_pct(v)} of visits"),
    "segment_rec_click_rate": (
        "recommendation clicks",
        lambda v: f"click {_pct(v)} of recommendations",
    ),
    "segment_cart_rate": ("carting", lambda v: f"fill a cart on {_pct(v)} of visits"),
    "segment_abandon_rate": ("cart leaving", lambda v: f"leave {_pct(v)} of their carts"),
    "segment_checkout_abandon_rate": (
        "leaving at checkout",
        lambda v: f"leave {_pct(v)} of the carts they leave at checkout",
    ),
    "segment_coupon_rate": ("coupon use", lambda v: f"try coupons on {_pct(v)} of carts"),
    "segment_promo_view_share": (
        "promotion browsing",
        lambda v: f"spend {_pct(v)} of their product views on promotions",
    ),
    "segment_comeback_rate": (
        "coming back",
        lambda v: f"come back for {_pct(v)} of the carts they leave",
    ),
    "segment_views_per_session": (
        "browsing depth",
        lambda v: f"view {v:.1f} products a visit",
    ),
    "segment_dwell_seconds": ("pace", lambda v: f"take {v:.0f} s between actions"),
}


def _like_them(said: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda v: f"shoppers like them {said(v)}"


_TEXT.update({code: (BEHAVIOUR, _like_them(said)) for code, (_, said) in _SEGMENT.items()})
assert set(_TEXT) == {
    *NUMERIC_FEATURES,
    *CATEGORICAL_FEATURES,
    *HISTORY_FEATURES,
    *SEGMENT_FEATURES,
}, "a feature without words"


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def explain(code: str, value: Any) -> Reason:
    """`code` (a model feature) with the cart's `value`, in words; an unknown code is kept as
    it is (a feature added to the model but not here), as plain behaviour."""
    kind, text = _TEXT.get(code, (BEHAVIOUR, lambda v: f"{code} = {v}"))
    if _missing(value):
        if code in _SEGMENT:
            return Reason(code, kind, f"their segment's {_SEGMENT[code][0]}")
        return Reason(code, kind, f"{code.replace('_', ' ')}: unknown")
    return Reason(code, kind, text(value))


def explain_all(codes: list[str], values: Mapping[str, Any]) -> list[Reason]:
    """Each of a cart's reason codes in words, in their order."""
    return [explain(c, values.get(c)) for c in codes]
