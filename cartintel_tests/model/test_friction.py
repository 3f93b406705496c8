"""Friction drivers on the default storefront under three seeds: the planted frictions surface
for the right segments, with support and stability; the category friction index follows the
planted costs."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from cartintel_assets.features.session_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from cartintel_assets.models.abandonment import XGBParams
from cartintel_assets.models.friction import (
    FRICTION_GROUPS,
    driver_table,
    fit_driver_model,
    friction_index,
    labelled_carts,
)
from cartintel_assets.models.segmentation import customer_behaviour, fit_segmentation
from cartintel_assets.simulation.storefront import Storefront

SCOPES = {"global": None, "segment": "segment_name", "category": "category", "region": "region"}


@pytest.fixture(scope="module")
def drivers(
    seeded_store: tuple[Storefront, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segments, carts and the driver table of one seeded storefront (its truth rides along)."""
    store, built = seeded_store
    db = tmp_path_factory.mktemp("friction") / "wh.duckdb"
    shutil.copy(built, db)  # the segments are written beside the shared warehouse's tables
    cfg = store.config
    con = duckdb.connect(str(db))
    counts = customer_behaviour(con, cfg.day(0), cfg.day(cfg.days - 1))
    model = fit_segmentation(counts)
    names = dict(zip(model.segment_ids, model.names, strict=True))
    segments = pd.DataFrame(
        {
            "customer_id": counts["customer_id"],
            "segment_name": [names[i] for i in model.predict(counts)],
        }
    )
    con.register("_segments", segments)
    con.execute("CREATE TABLE customer_segments AS SELECT * FROM _segments")
    carts = labelled_carts(con)
    con.close()
    driver_model = fit_driver_model(
        carts, "harmful", list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES), XGBParams()
    )
    return carts, driver_table(carts, driver_model, SCOPES)


def test_planted_frictions_drive_the_right_segments(
    drivers: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    carts, table = drivers
    seg = table[table["scope_type"] == "segment"].set_index(["scope", "feature"])
    shipping = seg.xs("shipping_share", level="feature")["mean_abs_shap"]
    # shipping cost bites hardest for the shipping-sensitive (planted -12 per unit of share)
    assert shipping.idxmax() == "shipping-sensitive shoppers", shipping.to_dict()
    # measured 1.75x on seed 8 (more on 7 and 9)
    assert shipping["shipping-sensitive shoppers"] > 1.5 * shipping["decisive buyers"]
    top_friction = (
        table[(table["scope_type"] == "segment") & (table["friction_rank"] == 1)]
        .set_index("scope")["feature"]
        .to_dict()
    )
    assert top_friction["shipping-sensitive shoppers"] in FRICTION_GROUPS["shipping"]
    # deal seekers respond to promotions (planted +1.0 logit): a price-side friction leads
    assert top_friction["deal seekers"] in FRICTION_GROUPS["price"], top_friction
    promo = seg.xs("carted_on_promotion", level="feature")["mean_abs_shap"]
    assert promo.idxmax() == "deal seekers"


def test_every_driver_has_support_and_a_stability_measure(
    drivers: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    carts, table = drivers
    ranked = table[table["note"].isna()]
    per_scope = ranked.groupby(["scope_type", "scope"]).agg(
        support=("support", "first"), stability=("stability", "first")
    )
    assert set(per_scope.index.get_level_values(0)) == set(SCOPES)
    assert (per_scope["support"] >= 100).all()
    assert (per_scope["stability"] >= 0.8).all(), per_scope["stability"].to_dict()
    seg_support = per_scope.loc["segment", "support"]
    assert seg_support.sum() == len(carts[carts["segment_name"].notna()])
    assert per_scope.loc[("global", "all"), "support"] == len(carts)


def test_category_friction_index_follows_the_planted_shipping_costs(
    seeded_store: tuple[Storefront, Path], drivers: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    carts, _ = drivers
    index = friction_index(carts, None, min_support=100)
    assert index["carts"].sum() == len(carts)  # every cart is in one category (or "unknown")
    truth = seeded_store[0].truth_sessions.set_index("session_id")
    known = carts[carts["session_id"].isin(truth.index)]
    true_share = (
        known.assign(t=truth.loc[known["session_id"], "ship_share"].to_numpy())
        .groupby("category")["t"]
        .mean()
    )
    ours = index.set_index("category")["shipping_share"].loc[true_share.index]
    assert spearmanr(ours, true_share).statistic > 0.9
    ranked = index[index["friction_index"].notna()]
    assert len(ranked) >= 5 and np.isclose(ranked["friction_index"].mean(), 0.0, atol=1e-9)
    # the index ranks categories by harm: its top category's carts are harmfully abandoned more
    # often than the average cart, and the ranking follows the simulator's true harm (on the
    # three seeds: Spearman 0.83, 0.54, 0.77 over six categories; a no-skill index: 0). Which
    # friction leads the top category differs by seed: shipping on seeds 7 and 8, not on 9.
    true_harm = (
        known.assign(h=truth.loc[known["session_id"], "harmful"].to_numpy())
        .groupby("category")["h"]
        .mean()
    )
    assert ranked.iloc[0]["harmful_lift"] > 1.0
    ranking = ranked.set_index("category")["friction_index"]
    assert spearmanr(ranking, true_harm.loc[ranking.index]).statistic > 0.5
