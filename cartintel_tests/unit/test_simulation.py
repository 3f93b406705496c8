"""The simulated storefront is deterministic and carries the structure it claims to plant."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cartintel_assets.contracts.schema import SESSIONS
from cartintel_assets.simulation.storefront import (
    BAD_ROW_KINDS,
    DriftSpec,
    Shop,
    Storefront,
    StorefrontConfig,
    land_day,
    land_interventions,
    simulate,
    write_storefront,
)
from cartintel_tests.conftest import SMALL


def test_same_seed_same_storefront_and_other_seed_differs(tmp_path: Path) -> None:
    a, b = simulate(SMALL), simulate(SMALL)
    write_storefront(a, tmp_path / "a")
    write_storefront(b, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "landing").rglob("*.*"))
    assert len(files) == 7 * SMALL.days
    for f in files:  # the same bytes land
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    c = simulate(StorefrontConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert a.bad_event_lines == b.bad_event_lines
    for day in a.landing:
        for name, frame in a.landing[day].items():
            pd.testing.assert_frame_equal(frame, b.landing[day][name])
    pd.testing.assert_frame_equal(a.truth_sessions, b.truth_sessions)
    assert not a.landing[day]["events"].equals(c.landing[day]["events"])


def test_customer_parts_share_the_catalogue_and_differ_in_their_customers() -> None:
    a, b = (simulate(replace(SMALL, population_seed=k)) for k in (0, 1))
    for day in a.landing:
        for name in ("products", "shipping_quotes"):  # the same shop
            pd.testing.assert_frame_equal(a.landing[day][name], b.landing[day][name])
    # customers of their own: other attributes, other sessions
    assert not a.truth_customers.equals(b.truth_customers)
    assert not a.landing[day]["sessions"].equals(b.landing[day]["sessions"])
    # ... drawn like the whole shop's: the abandonment rate each part is calibrated to
    for store in (a, b):
        carts = store.truth_sessions[store.truth_sessions["has_cart"]]
        assert carts["abandoned"].mean() == pytest.approx(SMALL.cart_abandonment_rate, abs=0.05)


def test_calibrated_to_published_abandonment_figures(default_store: Storefront) -> None:
    s = default_store.truth_sessions
    carts = s[s["has_cart"]]
    assert carts["abandoned"].mean() == pytest.approx(0.70, abs=0.02)  # Baymard ~70 %
    assert carts.loc[carts["abandoned"], "benign"].mean() == pytest.approx(0.48, abs=0.04)


def test_abandonment_differs_by_latent_type(default_store: Storefront) -> None:
    carts = default_store.truth_sessions.query("has_cart")
    by_type = carts.groupby("latent_type")["abandoned"].mean()
    assert by_type["window_shopper"] - by_type["decisive_buyer"] > 0.5
    # delayed deciders abandon, then mostly come back: benign; window shoppers do not
    benign = carts[carts["abandoned"]].groupby("latent_type")["benign"].mean()
    assert benign["delayed_decider"] > 0.7 > 0.1 > benign["window_shopper"]


def test_abandonment_rises_with_shipping_cost_for_sensitive_shoppers(
    default_store: Storefront,
) -> None:
    carts = default_store.truth_sessions.query("has_cart")
    sens = carts[carts["latent_type"] == "shipping_sensitive"]
    lo, hi = sens["ship_share"].quantile([0.25, 0.75])
    assert (
        sens.loc[sens["ship_share"] >= hi, "abandoned"].mean()
        - sens.loc[sens["ship_share"] <= lo, "abandoned"].mean()
        > 0.15
    )
    dec = carts[carts["latent_type"] == "decisive_buyer"]
    lo_d, hi_d = dec["ship_share"].quantile([0.25, 0.75])
    gap_decisive = (
        dec.loc[dec["ship_share"] >= hi_d, "abandoned"].mean()
        - dec.loc[dec["ship_share"] <= lo_d, "abandoned"].mean()
    )
    assert gap_decisive < 0.15  # the planted sensitivity is type-specific


def test_true_intervention_effects_follow_the_types(default_store: Storefront) -> None:
    ab = default_store.truth_sessions.query("abandoned")
    eff = ab.groupby("latent_type")[[c for c in ab.columns if c.startswith("p_conv_")]].mean()
    ss = eff.loc["shipping_sensitive"]
    assert ss["p_conv_free_shipping"] - ss["p_conv_control"] > 0.15
    assert ss["p_conv_reminder_email"] < ss["p_conv_control"]  # emails annoy them
    ws = eff.loc["window_shopper"]
    assert abs(ws["p_conv_discount_10"] - ws["p_conv_control"]) < 1e-9  # lost causes
    ds = eff.loc["deal_seeker"]
    assert ds["p_conv_discount_10"] > ds["p_conv_discount_5"] > ds["p_conv_control"]


def test_experiment_is_randomised_among_consenting_abandoners(default_store: Storefront) -> None:
    s = default_store.truth_sessions
    exp = s[s["in_experiment"]]
    assert exp["abandoned"].all() and exp["consented"].all()
    shares = exp["treatment"].value_counts(normalize=True)
    assert len(shares) == 5 and shares.max() - shares.min() < 0.05
    # arms are balanced on the latent type mix (randomised, not targeted)
    mix = pd.crosstab(exp["treatment"], exp["latent_type"], normalize="index")
    assert (mix.max() - mix.min()).max() < 0.08


def test_shipping_cost_drift_raises_costs_and_abandonment_in_its_region() -> None:
    base = StorefrontConfig(days=10, sessions_per_day=1500)
    drifted = StorefrontConfig(
        **{**base.__dict__, "drift": (DriftSpec(5, "shipping_cost", 1.0, "DE"),)}
    )
    a, b = simulate(base), simulate(drifted)
    qa = a.landing[base.day(7).isoformat()]["shipping_quotes"]
    qb = b.landing[base.day(7).isoformat()]["shipping_quotes"]
    de = qa["region"] == "DE"
    assert np.allclose(qb.loc[de, "shipping_cost"], 2 * qa.loc[de, "shipping_cost"], rtol=0.01)
    assert np.allclose(qb.loc[~de, "shipping_cost"], qa.loc[~de, "shipping_cost"])

    def rate(store: Storefront, latent_type: str | None = None) -> float:
        t = store.truth_sessions
        t = t[t["has_cart"] & (t["region"] == "DE") & (t["day"] >= 5)]
        if latent_type:
            t = t[t["latent_type"] == latent_type]
        return float(t["abandoned"].mean())

    # same seed, so the difference is the planted effect alone, strongest where it was planted
    def log_odds(p: float) -> float:
        return float(np.log(p / (1 - p)))

    assert rate(b) - rate(a) > 0.015
    # on the log-odds scale (their abandonment is already ~0.8, near the ceiling); measured 0.34
    ss = "shipping_sensitive"
    assert log_odds(rate(b, ss)) - log_odds(rate(a, ss)) > 0.25


def test_bad_rows_of_every_kind_are_injected_and_logged(
    bad_store: tuple[Storefront, object],
) -> None:
    store, _ = bad_store
    log = store.truth_bad_rows
    assert set(log["kind"]) == set(BAD_ROW_KINDS)
    total = sum(store.event_lines(day) for day in store.landing)
    dup = int((log["kind"] == "duplicate").sum())
    assert len(log) == pytest.approx(0.02 * (total - dup), rel=0.05)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="drift kind"):
        DriftSpec(1, "weather", 0.1)
    with pytest.raises(ValueError, match="bad_row_rate"):
        StorefrontConfig(bad_row_rate=0.9)


def test_the_shop_acts_on_decisions_day_by_day(tmp_path: Path) -> None:
    """No experiment: day 0 lands, its abandoned carts of consenting shoppers are decided (half a
    10 % discount by the plan, half nothing by exploration), and each outcome is drawn from that
    shopper's true probability under the chosen arm. Bought-back carts come back on later days
    (through the e-mail's link, the discount in the order value), and only they; the feed logs who
    chose each arm with what propensity."""
    cfg = replace(SMALL, days=9, sessions_per_day=1000, experiment_rate=0.0)
    shop = Shop(cfg)
    with pytest.raises(ValueError, match="cannot land"):
        shop.day_tables(1)
    day0 = land_day(shop, 0, tmp_path / "landing")
    sessions = pd.read_parquet(day0 / SESSIONS.landing_file)
    s = shop.world.sim.s
    open_ = s[(s["day"] == 0) & s["abandoned"] & s["consented"]]
    assert len(open_) > 200
    ids = shop.world.session_ids[open_["session_idx"].to_numpy()]
    assert set(ids) <= set(sessions["session_id"])
    arm = np.where(np.arange(len(ids)) % 2 == 0, "discount_10", "control")
    decisions = pd.DataFrame(
        {
            "session_id": ids,
            "arm": arm,
            "chosen_by": np.where(arm == "control", "exploration", "plan"),
            "propensity": np.where(arm == "control", 0.02, 0.92),
            "policy_version": "run-1",
            "model_version": "3",
        }
    )
    assert shop.act(decisions) == len(ids)
    with pytest.raises(ValueError, match="already decided"):
        shop.act(decisions.head(1))
    feed_path = land_interventions(shop, 0, tmp_path / "landing")
    feed = pd.read_parquet(feed_path).set_index("session_id").loc[ids]
    assert (feed["treatment"].to_numpy() == arm).all()
    assert set(feed["chosen_by"]) == {"plan", "exploration"} and set(feed["model_version"]) == {"3"}
    np.testing.assert_allclose(feed["propensity"], decisions["propensity"])
    truth = open_.set_index(ids)
    chance = np.where(arm == "control", truth["p_conv_control"], truth["p_conv_discount_10"])
    for a in ("discount_10", "control"):
        m = arm == a
        got, want = feed["converted_7d"].to_numpy()[m].mean(), chance[m].mean()
        assert abs(got - want) < 3 * np.sqrt(want * (1 - want) / m.sum()), a
    # common random numbers: the same cart, the same luck, whatever the arm
    np.testing.assert_array_equal(
        feed["converted_7d"].to_numpy(), truth["u_return"].to_numpy() < chance
    )
    land_day(shop, 1, tmp_path / "landing")
    with pytest.raises(ValueError, match="not for day 1"):
        shop.act(decisions.tail(1))
    # a cart in fact bought (the pipeline can miss a defective purchase line) is left alone
    bought = s[(s["day"] == 1) & s["purchased"]]["session_idx"].to_numpy()[:3]
    nudge = decisions.head(3).assign(session_id=shop.world.session_ids[bought])
    assert shop.act(nudge) == 0 and shop.not_applied == 3
    back_visit = shop.world.session_ids[len(s) :][:1]  # a return visit is bought by definition
    assert shop.act(nudge.head(1).assign(session_id=back_visit)) == 0 and shop.not_applied == 1
    # the bought-back carts return on later days, and only they, through the e-mail's link
    for i in range(2, cfg.days):
        land_day(shop, i, tmp_path / "landing")
    store = shop.storefront()
    later = pd.concat([store.landing[d]["sessions"] for d in list(store.landing)[1:]])
    returned = {
        sid
        for sid in feed.index[feed["converted_7d"]]
        if truth.loc[sid, "day"] + truth.loc[sid, "return_delay"] < cfg.days
    }
    assert len(returned) > 50
    w = shop.world.sessions
    source_of = pd.Series(
        shop.world.session_ids[w["returns"].clip(lower=0).to_numpy()],
        index=shop.world.session_ids[w["session_idx"].to_numpy()],
    )[w["returns"].to_numpy() >= 0]
    back = later[later["session_id"].isin(source_of.index)]
    back = back.assign(source=source_of.loc[back["session_id"]].to_numpy())
    back = back[back["source"].isin(ids)]
    assert set(back["source"]) == returned and back["source"].is_unique
    emailed = feed.loc[back["source"], "treatment"].to_numpy() != "control"
    assert ((back["traffic_source"] == "email").to_numpy() == emailed).all()
    # a discounted order is worth 90 % of the cart plus the shipping quoted on the return day
    events = pd.concat([store.landing[d]["events"] for d in list(store.landing)[1:]])
    by_type = {k: g.set_index("session_id") for k, g in events.groupby("event_type")}
    disc = back[emailed].set_index("session_id")
    cart = truth.loc[disc["source"], "cart_value"].to_numpy()
    quote = by_type["shipping_quote_shown"].loc[disc.index, "shipping_cost"].to_numpy()
    np.testing.assert_allclose(
        by_type["purchase"].loc[disc.index, "order_value"].to_numpy(),
        np.round(cart * 0.9 + quote, 2),
        atol=0.011,
    )
    t = store.truth_sessions.set_index("session_id").loc[ids]
    assert (t["treatment"].to_numpy() == arm).all() and not t["in_experiment"].any()
    assert (t["returned_7d"] == feed["converted_7d"]).all()


def test_the_shop_acts_on_the_published_plan_and_on_what_score_decided(tmp_path: Path) -> None:
    """A day's decisions come from the published plan and from `/score`'s decision log: the
    service answered during the session, so its decision stands and the plan's for the same cart
    is not applied; the latest of two answers for one cart counts; a cart without consent was no
    decision; the service's holdout carts are logged as holdout. The storefront applies exactly
    that, and its feed says who chose each arm."""
    import duckdb

    from cartintel_assets.decisions.log import day_decisions
    from cartintel_assets.defs.uplift.assets import PLAN_COLUMNS
    from cartintel_assets.serving.decision import DECISION_COLUMNS
    from cartintel_assets.warehouse.tables import replace_partition, typed_temp_table

    cfg = replace(SMALL, days=3, sessions_per_day=600, experiment_rate=0.0)
    shop = Shop(cfg)
    land_day(shop, 0, tmp_path / "landing")
    s = shop.world.sim.s
    open_ = s[(s["day"] == 0) & s["abandoned"] & s["consented"]]
    ids = shop.world.session_ids[open_["session_idx"].to_numpy()]
    assert len(ids) > 40
    day = cfg.day(0)
    cutoff = pd.Timestamp(day) + pd.Timedelta(hours=12)
    plan = pd.DataFrame(
        {c: None for c in PLAN_COLUMNS}
        | {
            "session_id": ids,
            "customer_id": "c_x",
            "action": "reminder_email",
            "chosen_by": "plan",
            "propensity": 0.9,
            "planned_by_run": "run-7",
            "uplift_model_version": "4",
            "send_at": cutoff,
        }
    )
    api_ids = ids[:12]
    answers = pd.DataFrame(
        {c: None for c in DECISION_COLUMNS}
        | {
            "request_id": [f"r{i}" for i in range(12)],
            "session_id": api_ids,
            "customer_id": "c_x",
            "cutoff_at": cutoff,
            "decided_at": pd.Timestamp("2026-12-01 10:00"),
            "consent": True,
            "in_holdout": [i == 1 for i in range(12)],
            "action": ["discount_10"] * 10 + ["none", "discount_10"],
            "uplift_model_version": "5",
        }
    )
    answers.loc[1, "action"] = "none"  # the service's holdout: no intervention
    answers.loc[11, "consent"] = False  # no consent: no decision (the plan's stands)
    # the same cart answered again, later, with another arm: the later answer counts
    again = answers.iloc[[0]].assign(
        request_id="r99", action="discount_5", decided_at=pd.Timestamp("2026-12-01 10:05")
    )
    con = duckdb.connect()
    typed_temp_table(con, plan, PLAN_COLUMNS, "_plan")
    replace_partition(con, "intervention_plan", "_plan", day)
    typed_temp_table(con, pd.concat([answers, again]), DECISION_COLUMNS, "_log")
    con.execute("CREATE TABLE decision_log AS SELECT * FROM _log")
    decided = day_decisions(con, day).set_index("session_id")
    assert len(decided) == len(ids) and decided.index.is_unique
    by = decided["chosen_by"]
    assert (by.loc[api_ids[[0, *range(2, 11)]]] == "api").all()
    assert by.loc[api_ids[1]] == "holdout" and decided.loc[api_ids[1], "arm"] == "control"
    assert decided.loc[api_ids[0], "arm"] == "discount_5"
    assert (decided.loc[api_ids[2:10], "arm"] == "discount_10").all()
    assert decided.loc[api_ids[10], "arm"] == "control"
    assert (by.loc[ids[11:]] == "plan").all()  # consentless answer: the plan's decision stands
    assert (decided.loc[ids[12:], "arm"] == "reminder_email").all()
    assert (decided.loc[api_ids[:11], "propensity"] == 1.0).all()
    assert shop.act(decided.reset_index()) == len(ids)
    feed = pd.read_parquet(land_interventions(shop, 0, tmp_path / "landing"))
    feed = feed.set_index("session_id").loc[ids]
    assert (feed["chosen_by"] == by.loc[ids]).all()
    assert (feed["treatment"] == decided.loc[ids, "arm"]).all()
    assert set(feed.loc[api_ids[:11], "model_version"]) == {"5"}
    assert set(feed.loc[ids[12:], "policy_version"]) == {"run-7"}
    # the service's nudge went out at the cart's cutoff: the feed says so, as the plan's caps
    # and the service's own count it (not when the request reached the service)
    assert (pd.to_datetime(feed.loc[api_ids[:11], "assigned_at"]) == cutoff).all()
