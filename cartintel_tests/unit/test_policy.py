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
from cartintel_assets.decisions.evaluation import constraint_violations
from cartintel_assets.decisions.plan import PlanRules, choose_actions, in_holdout, top_k_by_risk

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
