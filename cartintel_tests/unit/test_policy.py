"""The plan's rules on small hand-made cases: the catalogue linter, the persistent holdout,
consent, contact caps, discount caps per segment and the budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cartintel_assets.decisions.catalogue import (
    ManipulativeDesignError,
    lint_intervention,
    load_catalogue,
    parse_catalogue,
)
from cartintel_assets.decisions.economics import action_table
from cartintel_assets.decisions.evaluation import constraint_violations, intervention_rates
from cartintel_assets.decisions.plan import (
    DISPARITY,
    PlanRules,
    choose_actions,
    explore_and_choose,
    in_holdout,
    top_k_by_risk,
    within_disparity,
)

HONEST = load_catalogue()


def _entry(**changes: object) -> dict[str, object]:
    base = {
        "id": "offer",
        "arm": "discount_10",
        "channel": "email",
        "send_cost": 0.05,
        "discount": 0.10,
        "expires_hours": 72,
        "subject": "10% off your cart",
        "body": "Here is 10% off the items in your cart, valid for 72 hours.",
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"countdown": True, "expires_hours": None}, "false_urgency"),
        ({"countdown": True, "timer_resets": True}, "false_urgency"),
        ({"body": "Hurry, last chance!", "expires_hours": None}, "false_urgency"),
        ({"scarcity_claim": True}, "false_scarcity"),
        ({"body": "Only 2 left in stock - order now."}, "false_scarcity"),
        ({"add_ons": [{"name": "insurance", "price": 4.99, "pre_checked": True}]}, "sneaking"),
        ({"decline_text": "No thanks, I don't like saving money"}, "confirmshaming"),
    ],
)
def test_linter_refuses_each_manipulative_design(changes: dict[str, object], rule: str) -> None:
    with pytest.raises(ManipulativeDesignError) as err:
        parse_catalogue({"interventions": [_entry(**changes)]})
    assert rule in {f.rule for f in err.value.findings}
    assert "offer" in str(err.value)


def test_linter_accepts_honest_designs() -> None:
    """The shipped catalogue, a countdown to a real expiry, and an inventory-backed stock claim."""
    assert {i.arm for i in HONEST} == {
        "reminder_email",
        "free_shipping",
        "discount_5",
        "discount_10",
    }
    assert all(not lint_intervention(i) for i in HONEST)
    ok = parse_catalogue(
        {
            "interventions": [
                _entry(countdown=True),
                _entry(
                    id="stock",
                    arm="reminder_email",
                    discount=0.0,
                    body="Only 2 left in stock.",
                    scarcity_claim=True,
                    inventory_backed=True,
                    add_ons=[{"name": "gift wrap", "price": 2.0}],
                ),
            ]
        }
    )
    assert len(ok) == 2


def test_catalogue_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="arm 'free_lunch'"):
        parse_catalogue({"interventions": [_entry(arm="free_lunch")]})
    with pytest.raises(ValueError, match="unknown fields"):
        parse_catalogue({"interventions": [_entry(colour="red")]})
    with pytest.raises(ValueError, match="non-empty list"):
        parse_catalogue({"interventions": []})


def test_holdout_is_persistent_and_sized() -> None:
    ids = pd.Series([f"c{i}" for i in range(20000)])
    first = in_holdout(ids, 0.05, "salt")
    assert first.mean() == pytest.approx(0.05, abs=0.005)
    assert (
        in_holdout(ids.sample(frac=1.0, random_state=1), 0.05, "salt")
        == first[ids.sample(frac=1.0, random_state=1).index]
    ).all()
    assert (in_holdout(ids, 0.05, "other salt") != first).any()


def _carts(n: int, **cols: object) -> pd.DataFrame:
    base = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "send_at": pd.Timestamp("2026-10-10 12:00"),
            "segment": "decisive buyers",
            "blocked": "",
            "consent": True,
            "in_holdout": False,
            "cart_value": 100.0,
            "shipping_cost": 5.0,
            "risk": np.linspace(0.9, 0.1, n),
        }
    )
    for k, v in cols.items():
        base[k] = v
    return base


def _options(carts: pd.DataFrame, effect: dict[str, float]) -> pd.DataFrame:
    baseline = np.full(len(carts), 0.3)
    effects = pd.DataFrame({a: np.full(len(carts), e) for a, e in effect.items()})
    return action_table(carts, baseline, effects, HONEST, 0.4)


def test_economics_count_the_discount_paid_to_buyers_anyway() -> None:
    carts = _carts(1)
    opts = _options(carts, {"discount_10": 0.1, "reminder_email": 0.02}).set_index("arm")
    # p: 0.3 -> 0.4; margin 0.1 * 100 * 0.4 = 4; discount 0.4 * 10 = 4; send 0.05
    assert opts.loc["discount_10", "incremental_margin"] == pytest.approx(-0.05)
    assert opts.loc["discount_10", "expected_cost"] == pytest.approx(4.05)
    assert opts.loc["reminder_email", "incremental_margin"] == pytest.approx(0.75)


def test_rules_hold_and_reasons_are_given() -> None:
    carts = _carts(6)
    carts.loc[1, "blocked"], carts.loc[1, "consent"] = "no marketing consent", False
    carts.loc[2, "blocked"], carts.loc[2, "in_holdout"] = "holdout", True
    carts.loc[3, "customer_id"] = "c0"  # same customer as cart 0, 2 hours later
    carts.loc[3, "send_at"] = pd.Timestamp("2026-10-10 14:00")
    carts.loc[4, "segment"] = "deal seekers"
    history = pd.DataFrame(  # c5 had three contacts this week already
        {
            "customer_id": ["c5"] * 3,
            "sent_at": pd.to_datetime(["2026-10-05", "2026-10-07", "2026-10-09"]),
        }
    )
    opts = _options(carts, {"discount_10": 0.3, "discount_5": 0.05})
    rules = PlanRules(budget=100.0, max_discount_by_segment={"deal seekers": 0.05})
    plan = choose_actions(carts, opts, rules, history)
    assert plan.loc[0, "action"] == "discount_10"
    assert plan.loc[1, "reason"] == "no marketing consent"
    assert plan.loc[2, "reason"] == "holdout"
    assert plan.loc[3, "reason"].startswith("contact cap: another contact within 16 h")
    assert plan.loc[4, "action"] == "discount_5"  # capped at 5 % for deal seekers
    assert plan.loc[5, "reason"].startswith("contact cap: more than 3 contacts in 7 days")
    violations = constraint_violations(plan, carts, rules, history, HONEST)
    assert sum(violations.values()) == 0


def _rule_breaking_setup() -> tuple[pd.DataFrame, pd.DataFrame, PlanRules, pd.DataFrame]:
    """The carts of `test_rules_hold_and_reasons_are_given`, their valid plan, rules, history."""
    carts = _carts(6)
    carts.loc[1, "blocked"], carts.loc[1, "consent"] = "no marketing consent", False
    carts.loc[2, "blocked"], carts.loc[2, "in_holdout"] = "holdout", True
    carts.loc[3, "customer_id"] = "c0"
    carts.loc[3, "send_at"] = pd.Timestamp("2026-10-10 14:00")
    carts.loc[4, "segment"] = "deal seekers"
    history = pd.DataFrame(  # c5: three contacts this week; c4: two, so a third is allowed
        {
            "customer_id": ["c5"] * 3 + ["c4"] * 2,
            "sent_at": pd.to_datetime(
                ["2026-10-05", "2026-10-07", "2026-10-09", "2026-10-05", "2026-10-07"]
            ),
        }
    )
    rules = PlanRules(budget=100.0, max_discount_by_segment={"deal seekers": 0.05})
    opts = _options(carts, {"discount_10": 0.3, "discount_5": 0.05})
    plan = choose_actions(carts, opts, rules, history)
    assert plan.loc[4, "action"] != "none"  # the third contact of the week, at the limit
    return carts, plan, rules, history


@pytest.mark.parametrize(
    ("cart", "action", "budget", "counted"),
    [
        (1, "discount_5", None, {"contacted_without_consent": 1}),
        (2, "discount_5", None, {"contacted_in_holdout": 1}),
        # the second contact 2 h after the first: both planned contacts break the 16 h gap
        (3, "discount_5", None, {"contact_gap": 2}),
        (5, "discount_5", None, {"contact_weekly_cap": 1}),  # a 4th contact in 7 days
        (4, "discount_10", None, {"discount_over_cap": 1}),  # deal seekers: 5 % at most
        (None, None, 1.0, {"over_budget": 1}),
        (0, "free_dessert", None, {"unknown_intervention": 1}),
    ],
)
def test_each_injected_violation_is_counted(
    cart: int | None, action: str | None, budget: float | None, counted: dict[str, int]
) -> None:
    """The counter is written apart from the planner (SQL for the caps): a valid plan counts
    nothing, and one injected break of each kind is counted under its own name, and only there."""
    carts, plan, rules, history = _rule_breaking_setup()
    clean = constraint_violations(plan, carts, rules, history, HONEST)
    assert set(clean.values()) == {0} and set(counted) <= set(clean)
    assert (plan["action"] != "none").sum() >= 2  # the valid plan does contact someone
    broken = plan.copy()
    if cart is not None:
        broken.loc[cart, "action"] = action
    if budget is not None:
        rules = replace(rules, budget=budget)
    found = constraint_violations(broken, carts, rules, history, HONEST)
    assert found == {**clean, **counted}


def test_budget_goes_to_the_best_value_per_cost_and_is_never_exceeded() -> None:
    carts = _carts(40)
    effects = pd.DataFrame(
        {"discount_10": np.linspace(0.35, 0.15, 40), "reminder_email": np.linspace(0.0, 0.05, 40)}
    )
    opts = action_table(carts, np.full(40, 0.3), effects, HONEST, 0.4)
    for budget in (0.5, 20.0, 60.0, 1e6):
        plan = choose_actions(carts, opts, PlanRules(budget=budget))
        assert plan["expected_cost"].sum() <= budget + 1e-9
        assert (plan["incremental_margin"] >= 0).all()
    unlimited = choose_actions(carts, opts, PlanRules(budget=1e6))
    positive = opts[opts["incremental_margin"] > 0].groupby("cart")["incremental_margin"].max()
    assert unlimited["incremental_margin"].sum() == pytest.approx(positive.sum())
    tight = choose_actions(carts, opts, PlanRules(budget=20.0))
    assert (tight.loc[tight["action"] == "none", "reason"] != "").all()


def test_top_k_by_risk_takes_the_riskiest_first() -> None:
    carts = _carts(10)
    opts = _options(carts, {"discount_10": 0.1})
    plan = top_k_by_risk(carts, opts, "discount_10", replace(PlanRules(budget=12.2)))
    assert list(plan.index[plan["action"] != "none"]) == [0, 1, 2]


def test_exploration_logs_the_chance_each_choice_had() -> None:
    """Carts alike, a plan that gives all of them the reminder e-mail: a fifth of them (by hash)
    explore uniformly over {none, e-mail, 5 % off}; the logged propensities are the frequencies
    the choices are drawn with, and the rules still hold."""
    n = 6000
    carts = _carts(n, session_id=[f"s{i}" for i in range(n)])
    carts.loc[:199, "blocked"] = "holdout"
    carts.loc[200:399, "blocked"] = "no marketing consent"
    opts = _options(carts, {"reminder_email": 0.05, "discount_5": 0.02})
    rules = PlanRules(budget=1e9)
    plan = explore_and_choose(carts, opts, rules, None, 0.2, "salt")
    assert (plan.loc[:199, "chosen_by"] == "holdout").all()
    assert (plan.loc[:199, "propensity"] == 1.0).all() and (
        plan.loc[:199, "action"] == "none"
    ).all()
    assert (plan.loc[200:399, "chosen_by"] == "").all() and plan.loc[
        200:399, "propensity"
    ].isna().all()
    open_ = plan.loc[400:]
    explored = open_["chosen_by"] == "exploration"
    assert abs(explored.mean() - 0.2) < 3 * np.sqrt(0.2 * 0.8 / len(open_))
    assert set(open_.loc[~explored, "action"]) == {"reminder_email"}
    for action, share in (
        ("reminder_email", 0.8 + 0.2 / 3),
        ("discount_5", 0.2 / 3),
        ("none", 0.2 / 3),
    ):
        logged = open_.loc[open_["action"] == action, "propensity"]
        assert len(logged) > 100 and np.allclose(logged, share)
        assert abs((open_["action"] == action).mean() - share) < 3 * np.sqrt(
            share * (1 - share) / len(open_)
        )
    # the same salt gives the same draws
    again = explore_and_choose(carts, opts, rules, None, 0.2, "salt")
    assert again["action"].equals(plan["action"])
    assert plan.attrs["exploration_share"] == 0.2


def test_exploration_is_paid_from_the_budget() -> None:
    """Exploring a fifth of the carts would be expected to spend 635 (a third of each cart's
    choices is 5 % off at 1.65, a third the e-mail at 0.05); allowed half a budget of 400, the
    share is lowered so exploration expects 200, its propensities are logged with that share, and
    the plan gets what exploration left: together they never spend more than the budget, even
    when the draws are unlucky."""
    n = 6000
    carts = _carts(n, session_id=[f"s{i}" for i in range(n)])
    opts = _options(carts, {"reminder_email": 0.05, "discount_5": 0.02})
    per_cart = opts.groupby("cart")["expected_cost"].sum().mean() / 3
    assert per_cart * n * 0.2 == pytest.approx(0.2 * n * (0.05 + 1.65) / 3, rel=0.01)
    rules = PlanRules(budget=400.0)
    plan = explore_and_choose(carts, opts, rules, None, 0.2, "salt", budget_share=0.5)
    share = plan.attrs["exploration_share"]
    assert share == pytest.approx(200.0 / (per_cart * n))
    explored = plan["chosen_by"] == "exploration"
    assert abs(explored.mean() - share) < 3 * np.sqrt(share * (1 - share) / n)
    spent = plan.groupby("chosen_by")["expected_cost"].sum()
    assert 120.0 < spent["exploration"] < 280.0 and spent.sum() <= 400.0 + 1e-9
    assert spent["plan"] > 400.0 - spent["exploration"] - 0.05  # the plan spends the rest
    draws = plan.loc[explored & (plan["action"] == "discount_5"), "propensity"]
    assert len(draws) > 20 and np.allclose(draws, share / 3)
    assert sum(constraint_violations(plan, carts, rules, None, HONEST).values()) == 0
    # a budget exploration could overrun by chance: a drawn arm that does not fit is not drawn
    for salt in range(40):
        tiny = PlanRules(budget=4.0)
        small = explore_and_choose(carts, opts, tiny, None, 0.2, f"s{salt}", budget_share=1.0)
        assert small["expected_cost"].sum() <= 4.0 + 1e-9, salt
        assert sum(constraint_violations(small, carts, tiny, None, HONEST).values()) == 0


def test_exploration_respects_the_contact_caps() -> None:
    """An explored contact counts towards the caps: the same customer's other carts that day are
    neither explored into a second contact nor planned one."""
    carts = _carts(400, session_id=[f"s{i}" for i in range(400)], customer_id="c0")
    carts["send_at"] = pd.Timestamp("2026-10-10 12:00") + pd.to_timedelta(np.arange(400), "min")
    opts = _options(carts, {"reminder_email": 0.05})
    rules = PlanRules(budget=1e9)
    plan = explore_and_choose(carts, opts, rules, None, 0.5, "salt")
    assert (plan["action"] != "none").sum() == 1
    assert sum(constraint_violations(plan, carts, rules, None, HONEST).values()) == 0


def test_the_plan_keeps_within_the_disparity_bound() -> None:
    """E-mails move ES shoppers (effect rising with the cart's index) and only a quarter of DE's:
    the unconstrained plan mails ES at 3-4 times DE's rate. Bounded, it withdraws the least
    valuable of its own ES contacts, and only as many as the bound needs; exploration and the
    budget are untouched, and the rates, counted apart, are within 15 points on every grouping."""
    n = 4000
    rng = np.random.default_rng(3)
    carts = _carts(n, session_id=[f"s{i}" for i in range(n)])
    carts["region"] = np.where(np.arange(n) % 2 == 0, "ES", "DE")
    carts["device"] = rng.choice(["mobile", "desktop"], n)
    carts["customer"] = rng.choice(["new", "returning"], n)
    es = (carts["region"] == "ES").to_numpy()
    effect = np.where(es, np.linspace(0.01, 0.08, n), np.where(rng.random(n) < 0.25, 0.05, -0.05))
    opts = action_table(
        carts, np.full(n, 0.3), pd.DataFrame({"reminder_email": effect}), HONEST, 0.4
    )
    rules = PlanRules(budget=1e9)
    plan = explore_and_choose(carts, opts, rules, None, 0.1, "salt")
    groups = carts[["region", "device", "customer"]]
    before = intervention_rates(plan, carts, "region")["mean"]
    assert before["ES"] - before["DE"] > 0.5
    bounded = within_disparity(plan, groups, 0.15, 30)
    for by in groups.columns:
        rates = intervention_rates(bounded, carts, by)["mean"]
        assert rates.max() - rates.min() <= 0.15 + 1e-9, by
    dropped = bounded["reason"] == DISPARITY
    assert dropped.sum() > 100 and (plan.loc[dropped, "chosen_by"] == "plan").all()
    assert (bounded.loc[dropped, "action"] == "none").all() and es[dropped].all()
    kept = (bounded["action"] != "none") & es & (bounded["chosen_by"] == "plan")
    assert (
        plan.loc[dropped, "incremental_margin"].max()
        <= bounded.loc[kept, "incremental_margin"].min()
    )
    # as few as the bound needs: one more contact back would break it
    rates = intervention_rates(bounded, carts, "region")["mean"]
    assert rates["ES"] - rates["DE"] > 0.15 - 1.5 / es.sum()
    explored = plan["chosen_by"] == "exploration"
    assert bounded.loc[explored].equals(plan.loc[explored])
    assert sum(constraint_violations(bounded, carts, rules, None, HONEST).values()) == 0
    # a plan already within the bound is left as it is
    assert within_disparity(bounded, groups, 0.15, 30).equals(bounded)
