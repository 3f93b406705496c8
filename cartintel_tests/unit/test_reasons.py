"""Reason codes in a merchant's words, each marked a friction the shop can act on or behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartintel_assets.features.session_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from cartintel_assets.models.reasons import ACTIONABLE, explain, explain_all


@pytest.mark.parametrize(
    ("code", "value", "text", "kind"),
    [
        ("price_vs_30d_median", 0.12, "price 12 % above its 30-day median", "price"),
        ("price_vs_30d_median", -0.051, "price 5 % below its 30-day median", "price"),
        ("price_change_in_session", 0.05, "price rose 5 % during the visit", "price"),
        ("shipping_share", 0.18, "shipping is 18 % of the cart value", "shipping"),
        ("shipping_cost", 6.9, "shipping costs 6.90", "shipping"),
        ("delivery_days", 4.0, "delivery takes 4 days", "delivery"),
        ("review_rating", 3.24, "reviews average 3.2 stars", "reviews"),
        ("secs_in_session", 754.0, "13 min on the site so far", "behaviour"),
        ("prior_sessions", 1, "1 earlier visit", "behaviour"),
        ("weekday", 1, "shopping on a Monday", "behaviour"),  # ISO: Monday is 1
        ("weekday", 7, "shopping on a Sunday", "behaviour"),
        ("region", "ES", "shopping from ES", "behaviour"),
        ("delivery_days", float("nan"), "delivery days: unknown", "delivery"),
        ("review_count", pd.NA, "review count: unknown", "reviews"),
    ],
)
def test_reasons_read_as_a_merchant_says_them(
    code: str, value: object, text: str, kind: str
) -> None:
    r = explain(code, value)
    assert (r.text, r.kind, r.actionable) == (text, kind, kind in ACTIONABLE)


def test_every_feature_has_words_and_no_code_leaks() -> None:
    """Every model feature, at a typical value and missing, reads without its code name."""
    values = {f: 2.0 for f in NUMERIC_FEATURES} | {f: "mobile" for f in CATEGORICAL_FEATURES}
    said = explain_all([*NUMERIC_FEATURES, *CATEGORICAL_FEATURES], values)
    assert len(said) == len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES)
    for r in said:
        assert "_" not in r.text and r.code not in r.text, r
    acting = {r.code for r in said if r.actionable}
    assert acting == {
        "price_vs_30d_median",
        "price_change_in_session",
        "carted_on_promotion",
        "coupon_attempts",
        "shipping_cost",
        "shipping_share",
        "delivery_days",
        "review_rating",
        "review_count",
    }
    missing = explain_all(list(NUMERIC_FEATURES), {f: np.nan for f in NUMERIC_FEATURES})
    assert all(r.text.endswith(": unknown") for r in missing)
