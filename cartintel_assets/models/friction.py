"""Friction drivers: which features push carts towards harmful abandonment, globally and per
segment, category and region, with support and bootstrap stability; and a friction index per
category. No Dagster import.

Drivers come from one explanatory model per run, fitted with the abandonment model's training
code (`fit_boosted_model`) on the labelled carts with the customer's segment and the cart's main
category as extra inputs. Without them the production risk model, trained on a few thousand
carts, gives shipping cost the same weight for every kind of shopper (measured on the default
storefront: mean positive SHAP 0.034-0.044 for all six planted types); with them the trees can
let a friction bite where it does. A scope's drivers are its carts' mean |SHAP| per feature; their
stability is the mean Spearman correlation between the scope's top-5 ranking and the ranks the
same five features get in bootstrap resamples of the scope's carts.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split

from cartintel_assets.models.abandonment import BoostedModel, XGBParams, fit_boosted_model

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
SCOPE_INPUTS: tuple[str, ...] = ("segment_name", "category")
TOP = 5


def fit_driver_model(
    carts: pd.DataFrame,
    target: str,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
) -> BoostedModel:
    """The explanatory model: the risk features plus segment and category; a stratified quarter
    of the carts stops it early (no calibration: only its contributions are used)."""
    y = carts[target].to_numpy(dtype=int)
    fit, stop = train_test_split(
        np.arange(len(carts)), test_size=0.25, random_state=params.seed, stratify=y
    )
    return fit_boosted_model(
        carts.iloc[fit],
        y[fit],
        carts.iloc[stop],
        y[stop],
        numeric,
        [*categorical, *SCOPE_INPUTS],
        params,
        calibrate=False,
    )


def _stability(contrib: pd.DataFrame, rng: np.random.Generator, bootstraps: int) -> float:
    full = contrib.mean()
    top = list(full.sort_values(ascending=False).index[:TOP])
    ranks = full.rank(ascending=False, method="first")[top].to_numpy()
    values = contrib.to_numpy()
    rhos = []
    for _ in range(bootstraps):
        boot = pd.Series(
            values[rng.integers(0, len(values), len(values))].mean(axis=0), index=contrib.columns
        )
        rho = spearmanr(ranks, boot.rank(ascending=False, method="first")[top].to_numpy()).statistic
        rhos.append(float(rho) if np.isfinite(rho) else 0.0)
    return float(np.mean(rhos))


def driver_table(
    carts: pd.DataFrame,
    model: BoostedModel,
    scopes: dict[str, str | None],
    min_support: int = 100,
    bootstraps: int = 50,
    seed: int = 7,
) -> pd.DataFrame:
    """One row per scope and feature: mean |SHAP|, rank among all features and among the
    friction features, support and the scope's stability. Scopes: the global one (column None)
    and every value of each scope column; a scope with fewer than `min_support` carts is listed
    with its support and a note, without drivers."""
    contrib = pd.DataFrame(
        np.abs(model.contributions(carts)[:, :-1]), columns=model.features, index=carts.index
    )
    rng = np.random.default_rng(seed)
    frames = []
    for scope_type, column in scopes.items():
        groups = (
            [("all", carts.index)]
            if column is None
            else [(str(k), idx) for k, idx in carts.groupby(column, dropna=False).groups.items()]
        )
        for scope, idx in groups:
            if len(idx) < min_support:
                frames.append(
                    pd.DataFrame(
                        {
                            "scope_type": [scope_type],
                            "scope": [scope],
                            "support": [len(idx)],
                            "note": [f"fewer than {min_support} carts"],
                        }
                    )
                )
                continue
            part = contrib.loc[idx]
            mean = part.mean()
            table = pd.DataFrame({"feature": mean.index, "mean_abs_shap": mean.to_numpy()})
            table["rank"] = table["mean_abs_shap"].rank(ascending=False, method="first").astype(int)
            table["friction"] = table["feature"].map(FRICTION_OF)
            fr = table["friction"].notna()
            table.loc[fr, "friction_rank"] = table.loc[fr, "mean_abs_shap"].rank(
                ascending=False, method="first"
            )
            table["support"] = len(idx)
            table["stability"] = _stability(part, rng, bootstraps)
            frames.append(table.assign(scope_type=scope_type, scope=scope, note=None))
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
    out = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    return out.sort_values(["scope_type", "scope", "rank"], na_position="last").reset_index(
        drop=True
    )


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
        out = out.merge(reviews[[by, *review_cols]].rename(columns=review_cols), on=by, how="left")
        components += list(review_cols.values())
    enough = out["carts"] >= min_support
    z = out.loc[enough, components]
    z = (z - z.mean()) / z.std(ddof=0).replace(0, np.nan)
    out["friction_index"] = np.nan
    out.loc[enough, "friction_index"] = z.mean(axis=1, skipna=True)
    out["note"] = [None if ok else f"fewer than {min_support} carts" for ok in enough]
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
