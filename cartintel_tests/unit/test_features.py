"""Point-in-time features never see past the cutoff; labels agree with the simulator's truth."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from cartintel_assets.features.labels import cart_labels
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    HISTORY_FEATURES,
    KEY_COLUMNS,
    NUMERIC_FEATURES,
    CutoffPolicy,
    Timeline,
    session_features,
)
from cartintel_assets.simulation.storefront import Storefront, StorefrontConfig, simulate
from cartintel_tests.conftest import ingested_warehouse

CFG = StorefrontConfig(days=10, sessions_per_day=600, n_customers=2500, n_products=150)
DAY = CFG.day(2)  # the last day whose 7-day label window has landed


@pytest.fixture(scope="module")
def warehouse(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Storefront, duckdb.DuckDBPyConnection]:
    store = simulate(CFG)
    return store, ingested_warehouse(store, tmp_path_factory.mktemp("features"))


# The simulator-truth floors hold for other storefronts too, not only the default seed's.
@pytest.fixture(
    scope="module", params=[CFG.seed, CFG.seed + 1, CFG.seed + 2], ids=lambda s: f"seed{s}"
)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Storefront, duckdb.DuckDBPyConnection]:
    store = simulate(dataclasses.replace(CFG, seed=request.param))
    return store, ingested_warehouse(store, tmp_path_factory.mktemp(f"seed{request.param}"))


def _features(con: duckdb.DuckDBPyConnection, events: str) -> pd.DataFrame:
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _s AS SELECT * FROM raw_sessions WHERE partition_date = DATE '{DAY}'"
    )
    return session_features(con, events, "_s", CutoffPolicy(10.0), DAY - timedelta(days=365), DAY)


def test_changing_events_after_the_cutoff_changes_no_feature(warehouse) -> None:
    _, con = warehouse
    con.execute(
        f"CREATE OR REPLACE TABLE _ev AS SELECT * FROM raw_events WHERE partition_date = DATE '{DAY}'"
    )
    before = _features(con, "_ev")
    assert len(before) > 300
    assert list(before.columns) == [
        *KEY_COLUMNS,
        *NUMERIC_FEATURES,
        *CATEGORICAL_FEATURES,
        *HISTORY_FEATURES,
    ]
    cut = before[["session_id", "cutoff_at"]]
    con.register("_cut", cut)
    after_cut = "e.session_id = c.session_id AND e.ts > c.cutoff_at"
    n_after = con.execute(f"SELECT count(*) FROM _ev e JOIN _cut c ON {after_cut}").fetchall()[0][0]
    assert n_after > 300  # plenty of later events (checkout, purchase, ...) to tamper with
    # tamper with everything after the cutoff: prices, types, products; delete some; add a purchase
    con.execute(
        f"UPDATE _ev e SET price = coalesce(price, 1) * 7, quantity = 9, product_id = 'P00001',"
        f" event_type = CASE WHEN event_type = 'purchase' THEN 'remove_from_cart' ELSE 'add_to_cart' END"
        f" FROM _cut c WHERE {after_cut}"
    )
    con.execute(f"DELETE FROM _ev e USING _cut c WHERE {after_cut} AND e.seq % 3 = 0")
    con.execute(
        "INSERT INTO _ev (event_id, session_id, seq, ts, event_type, product_id, quantity, price, partition_date, source_line, ingested_at)"
        " SELECT 'X' || session_id, session_id, 999, cutoff_at + INTERVAL 1 SECOND, 'purchase', 'P00002', 1, 1.0,"
        f" DATE '{DAY}', 0, now()::TIMESTAMP FROM _cut"
    )
    after = _features(con, "_ev")
    pd.testing.assert_frame_equal(before, after)
    # the test can fail: the same tampering before the cutoff does change features
    con.execute(
        "UPDATE _ev e SET price = price * 3 FROM _cut c WHERE e.session_id = c.session_id AND e.ts < c.cutoff_at"
    )
    assert not _features(con, "_ev")["cart_value"].equals(before["cart_value"])


def test_features_recover_the_planted_friction(seeded) -> None:
    store, con = seeded
    f = _features(con, f"(SELECT * FROM raw_events WHERE partition_date = DATE '{DAY}')")
    truth = store.truth_sessions.set_index("session_id")
    m = f.join(
        truth[["ship_share", "ship_days", "cart_value", "latent_type"]].add_prefix("t_"),
        on="session_id",
        how="inner",
    )
    carts = truth[(truth["date"] == DAY.isoformat()) & truth["has_cart"]]
    assert len(m) >= 0.99 * len(carts)  # every cart session is scored (the rest are return visits)
    assert np.corrcoef(m["shipping_share"], m["t_ship_share"])[0, 1] > 0.9
    assert (m["delivery_days"] == m["t_ship_days"]).mean() > 0.95
    assert np.corrcoef(m["cart_value"], m["t_cart_value"])[0, 1] > 0.9
    # history is computed from earlier sessions only: the first session of a customer has none
    first = f.sort_values("started_at").groupby("customer_id").head(1)
    assert (
        first["prior_sessions"]
        <= f.set_index("session_id").loc[first["session_id"], "prior_sessions"].to_numpy()
    ).all()
    assert f.loc[f["prior_sessions"] == 0, "returning_customer"].eq(0).all()


def test_labels_agree_with_the_simulator_truth(seeded) -> None:
    store, con = seeded
    labels = cart_labels(con, DAY)
    assert labels["label_complete"].all()
    truth = store.truth_sessions.set_index("session_id")[
        ["abandoned", "harmful", "benign"]
    ].add_prefix("t_")
    m = labels.join(truth, on="session_id", how="inner")
    assert len(m) > 300
    assert (m["abandoned"] == m["t_abandoned"]).all()
    # a later, unrelated purchase of the same product reads as a comeback (deal seekers keep
    # buying the same promoted products, and every consenting abandoner now enters the
    # experiment, where 4 in 5 are nudged to buy again): measured 0.987
    assert (m["harmful"] == m["t_harmful"]).mean() > 0.98
    assert (labels["harmful"] | labels["benign"]).eq(labels["abandoned"]).all()
    late = cart_labels(con, CFG.day(CFG.days - 2))
    assert not late["label_complete"].any()  # 7 later days have not landed yet


def test_timeline_counts_and_sums_what_came_before_a_moment() -> None:
    """The reference lookups (reviews before the cutoff, history before the session) against a
    brute-force count and sum, with unknown keys, ties and moments outside every group."""
    rng = np.random.default_rng(3)
    key = np.sort(rng.choice(np.array(["a", "b", "c", "d"], dtype=object), 200))
    at = np.concatenate([np.sort(rng.integers(0, 50, (key == k).sum())) for k in "abcd"])
    value = rng.normal(size=200)
    tl = Timeline.build(key, at, {"v": value})
    q_key = rng.choice(np.array(["a", "b", "c", "d", "zz"], dtype=object), 300)
    q_at = rng.integers(-5, 60, 300)
    first, end = tl.before(q_key, q_at)
    got = tl.total("v", first, end)
    for i in range(300):
        m = (key == q_key[i]) & (at < q_at[i])
        assert end[i] - first[i] == m.sum()
        assert got[i] == pytest.approx(value[m].sum(), abs=1e-12)


def test_what_happens_at_or_after_the_cutoff_elsewhere_changes_no_feature(warehouse) -> None:
    """The event at the cutoff itself, and every table a feature reads beside the day's events
    (history, reviews, catalogue, carrier quotes), tampered from the cutoff on: no feature moves.
    Tampering the history before the day does move them."""
    _, con = warehouse
    con.execute(
        f"CREATE OR REPLACE TABLE _ev AS SELECT * FROM raw_events WHERE partition_date = DATE '{DAY}'"
    )
    before = _features(con, "_ev")
    con.register("_cut", before[["session_id", "customer_id", "cutoff_at"]])
    last_cutoff = before["cutoff_at"].max()
    later = f"partition_date > DATE '{DAY}'"
    counts = {
        "at the cutoff": "SELECT count(*) FROM _ev e JOIN _cut c ON e.session_id = c.session_id"
        " AND e.ts = c.cutoff_at",
        "later reviews": f"SELECT count(*) FROM raw_reviews WHERE ts >= TIMESTAMP '{last_cutoff}'",
        "later history": f"SELECT count(*) FROM raw_events WHERE {later}",
        "later catalogue": f"SELECT count(*) FROM raw_products WHERE {later}",
        "later quotes": f"SELECT count(*) FROM raw_shipping_quotes WHERE {later}",
    }
    found = {k: con.execute(sql).fetchall()[0][0] for k, sql in counts.items()}
    assert min(found.values()) > 50, found  # every kind of tampering has rows to act on
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "UPDATE _ev e SET price = coalesce(price, 1) * 7, quantity = 9, product_id = 'P00001'"
            " FROM _cut c WHERE e.session_id = c.session_id AND e.ts = c.cutoff_at"
        )
        con.execute(
            f"UPDATE raw_reviews SET rating = 1, text = 'broken, late, overpriced'"
            f" WHERE ts >= TIMESTAMP '{last_cutoff}'"
        )
        con.execute(f"UPDATE raw_events SET price = coalesce(price, 1) * 7 WHERE {later}")
        con.execute(f"UPDATE raw_sessions SET device = 'tablet' WHERE {later}")
        con.execute(
            f"UPDATE raw_products SET price = price * 5, on_promotion = NOT on_promotion WHERE {later}"
        )
        con.execute(
            f"UPDATE raw_shipping_quotes SET shipping_cost = shipping_cost * 5 WHERE {later}"
        )
        pd.testing.assert_frame_equal(before, _features(con, "_ev"))
        # the test can fail: the customers' earlier sessions are history the features read
        con.execute(
            f"DELETE FROM raw_events WHERE partition_date < DATE '{DAY}' AND session_id IN"
            f" (SELECT session_id FROM raw_sessions WHERE partition_date < DATE '{DAY}')"
        )
        changed = _features(con, "_ev")
        assert not changed[list(NUMERIC_FEATURES)].equals(before[list(NUMERIC_FEATURES)])
    finally:
        con.execute("ROLLBACK")
    pd.testing.assert_frame_equal(before, _features(con, "_ev"))
