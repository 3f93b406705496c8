"""Friction drivers: which features push carts towards harmful abandonment, globally and per
segment, category and region, with support and bootstrap stability; and a friction index per
category. No Dagster import.

Drivers are mean absolute SHAP contributions of a risk model fitted with the abandonment
model's own training code (`fit_risk_model`) on the carts of each scope. One global model does
not do: with a few thousand labelled carts it gives shipping cost the same weight for every kind
of shopper (measured on the default storefront: mean positive SHAP 0.034-0.044 for all six
planted types), while a model per scope finds where a friction actually bites.
"""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split

from cartintel_assets.ml.abandonment import XGBParams, fit_risk_model

FRICTION_GROUPS: dict[str, tuple[str, ...]] = {
    "shipping": ("shipping_share", "shipping_cost", "delivery_days"),
    "price": (
        "price_vs_30d_median",
        "price_change_in_session",
        "carted_on_promotion",
        "coupon_attempts",
    ),
    "reviews": ("review_rating", "review_count"),
}
FRICTION_OF = {f: g for g, fs in FRICTION_GROUPS.items() for f in fs}
TOP = 5


def _importance(
    data: pd.DataFrame, y: np.ndarray, numeric: list[str], categorical: list[str], params: XGBParams
) -> pd.Series:
    """Mean |SHAP| per feature of a model fitted on `data` (a stratified quarter stops it)."""
    idx = np.arange(len(data))
    fit, stop = train_test_split(idx, test_size=0.25, random_state=params.seed, stratify=y)
    model = fit_risk_model(
        data.iloc[fit], y[fit], data.iloc[stop], y[stop], numeric, categorical, params,
        calibrate=False,
    )
    contrib = np.abs(model.contributions(data)[:, :-1]).mean(axis=0)
    return pd.Series(contrib, index=model.features)


def scope_drivers(
    data: pd.DataFrame,
    y: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
    bootstraps: int = 10,
) -> tuple[pd.DataFrame, float]:
    """Drivers of one scope ranked by mean |SHAP|, and their stability: the mean Spearman
    correlation, over bootstrap resamples (each refitted), between the full fit's top-5 ranking
    and the ranks the resample gives those five features."""
    full = _importance(data, y, numeric, categorical, params)
    ranks = full.rank(ascending=False, method="first")
    top = list(full.sort_values(ascending=False).index[:TOP])
    rng = np.random.default_rng(params.seed)
    correlations = []
    for b in range(bootstraps):
        pick = rng.integers(0, len(data), len(data))
        if len(np.unique(y[pick])) < 2:
            continue
        boot = _importance(
            data.iloc[pick].reset_index(drop=True),
            y[pick],
            numeric,
            categorical,
            replace(params, seed=params.seed + b + 1),
        )
        boot_ranks = boot.rank(ascending=False, method="first")
        rho = spearmanr(ranks[top].to_numpy(), boot_ranks[top].to_numpy()).statistic
        correlations.append(float(rho) if np.isfinite(rho) else 0.0)
    out = pd.DataFrame(
        {
            "feature": full.index,
            "mean_abs_shap": full.to_numpy(),
            "rank": ranks.astype(int).to_numpy(),
        }
    )
    out["friction"] = out["feature"].map(FRICTION_OF)
    friction = out[out["friction"].notna()].sort_values("mean_abs_shap", ascending=False)
    out["friction_rank"] = out["feature"].map(
        dict(zip(friction["feature"], range(1, len(friction) + 1), strict=True))
    )
    out["support"] = len(data)
    stability = float(np.mean(correlations)) if correlations else float("nan")
    out["stability"] = stability
    return out.sort_values("rank").reset_index(drop=True), stability


def driver_table(
    data: pd.DataFrame,
    target: str,
    scopes: dict[str, str | None],
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
    min_support: int = 300,
    bootstraps: int = 10,
    progress: object = None,
) -> pd.DataFrame:
    """Drivers for the global scope (column None) and for every value of each scope column with
    at least `min_support` carts (and both outcomes); smaller scopes are listed with no drivers."""
    frames = []
    jobs: list[tuple[str, str, pd.DataFrame]] = []
    for scope_type, column in scopes.items():
        if column is None:
            jobs.append((scope_type, "all", data))
            continue
        for value, part in data.groupby(column, dropna=False):
            jobs.append((scope_type, str(value), part))
    for scope_type, scope, part in jobs:
        y = part[target].to_numpy(dtype=int)
        if len(part) < min_support or y.min() == y.max():
            frames.append(
                pd.DataFrame(
                    {
                        "scope_type": [scope_type],
                        "scope": [scope],
                        "support": [len(part)],
                        "note": [f"fewer than {min_support} carts or one outcome only"],
                    }
                )
            )
            continue
        drivers, _ = scope_drivers(
            part.reset_index(drop=True), y, numeric, categorical, params, bootstraps
        )
        if callable(progress):
            progress(f"drivers of {scope_type} {scope}: {len(part):,} carts")
        frames.append(drivers.assign(scope_type=scope_type, scope=scope, note=None))
    columns = [
        "scope_type",
        "scope",
        "feature",
        "friction",
        "mean_abs_shap",
        "rank",
        "friction_rank",
        "support",
        "stability",
        "note",
    ]
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def friction_index(
    carts: pd.DataFrame,
    reviews: pd.DataFrame | None,
    by: str = "category",
    target: str = "harmful",
    min_support: int = 100,
) -> pd.DataFrame:
    """Per value of `by`: harmful-abandonment lift against all carts, mean shipping share, mean
    price rise vs the 30-day median, mean delivery days and, from reviews, the negative share and
    the shipping and price complaint shares; the index is the mean of the components' z-scores
    across the groups with at least `min_support` carts (others get no index, with a note)."""
    base = carts[target].mean()
    g = carts.groupby(by, dropna=False)
    out = pd.DataFrame(
        {
            "carts": g.size(),
            "harmful_rate": g[target].mean(),
            "shipping_share": g["shipping_share"].mean(),
            "price_rise": g["price_vs_30d_median"].apply(lambda s: float(s.clip(lower=0).mean())),
            "delivery_days": g["delivery_days"].mean(),
        }
    ).reset_index()
    out["harmful_lift"] = out["harmful_rate"] / base if base > 0 else np.nan
    components = ["harmful_lift", "shipping_share", "price_rise", "delivery_days"]
    if reviews is not None and len(reviews):
        review_cols = {
            "negative_share": "review_negative_share",
            "share_negative_shipping": "review_shipping_complaints",
            "share_negative_price": "review_price_complaints",
        }
        out = out.merge(
            reviews[[by, *review_cols]].rename(columns=review_cols), on=by, how="left"
        )
        components += list(review_cols.values())
    enough = out["carts"] >= min_support
    z = out.loc[enough, components]
    z = (z - z.mean()) / z.std(ddof=0).replace(0, np.nan)
    out["friction_index"] = np.nan
    out.loc[enough, "friction_index"] = z.mean(axis=1, skipna=True)
    out["note"] = np.where(enough, None, f"fewer than {min_support} carts")
    return out.sort_values("friction_index", ascending=False, na_position="last").reset_index(
        drop=True
    )


CARTS_SQL = """
WITH carted AS (
    SELECT e.session_id, p.category, e.price * coalesce(e.quantity, 1) AS value
    FROM raw_events e
    JOIN raw_products p ON p.product_id = e.product_id AND p.partition_date = e.partition_date
    WHERE e.event_type = 'add_to_cart'
),
main AS (SELECT session_id, arg_max(category, value) AS category FROM carted GROUP BY session_id)
SELECT f.*, l.abandoned, l.harmful, main.category, seg.segment_name
FROM session_features f
JOIN abandonment_labels l ON l.session_id = f.session_id
LEFT JOIN main ON main.session_id = f.session_id
LEFT JOIN customer_segments seg ON seg.customer_id = f.customer_id
WHERE l.label_complete
ORDER BY f.started_at, f.session_id
"""


def labelled_carts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Carts with complete labels, their point-in-time features, the category of the cart's
    most valuable item and the customer's segment."""
    return con.execute(CARTS_SQL).df()
