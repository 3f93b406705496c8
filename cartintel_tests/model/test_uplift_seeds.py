"""Uplift's simulator-truth floors on every seed of `TRUTH_SEEDS` at the demo's traffic: effect
recovery, off-policy values covering the true ones, the gate agreeing with the truth, and the
plan's true margin against the oracle, the feature oracle and the best single arm (apart from
`test_uplift.py` so that the test workers run them side by side)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from cartintel_assets.decisions.catalogue import load_catalogue
from cartintel_assets.decisions.economics import action_table, expected_margins, realised_margin
from cartintel_assets.decisions.evaluation import (
    GateEvidence,
    Incumbent,
    constraint_violations,
    uplift_gate,
)
from cartintel_assets.decisions.ope import greedy_policy, off_policy_value, true_value
from cartintel_assets.decisions.plan import ContactRules, PlanRules, choose_actions
from cartintel_assets.models.uplift import (
    ARMS,
    CONTROL,
    CrossFit,
    calibrated,
    cross_fit,
    effect_calibration,
    effect_error,
    intervention_log,
    targeting_features,
)
from cartintel_assets.simulation.storefront import Storefront
from cartintel_tests.benchmarks.decisions import decision_quality, true_effects
from cartintel_tests.model.test_uplift import MARGIN

DEMO_BUDGET = 150.0  # the plan's default daily budget (PlanSettings)


@pytest.fixture(scope="module")
def seeded_fit(
    seeded_demo_store: tuple[Storefront, Path],
) -> tuple[Storefront, pd.DataFrame, CrossFit]:
    """One seed's randomised log and the X-learner's out-of-fold fit on it."""
    store, db = seeded_demo_store
    with duckdb.connect(str(db), read_only=True) as con:
        log, missing = intervention_log(con)
    assert missing == 0 and len(log) > 2000
    log = log.reset_index(drop=True)
    num, cat = targeting_features()
    t, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    return store, log, cross_fit(log, t, y, "x-learner", num, cat)


def test_effect_recovery_holds_on_every_seed(
    seeded_fit: tuple[Storefront, pd.DataFrame, CrossFit],
) -> None:
    """The X-learner's recovery of the true per-cart effects (the floors above) on the demo
    storefront under three seeds."""
    store, log, fit = seeded_fit
    t, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    _, truth = true_effects(store, log["session_id"])
    x = effect_error(fit.effects, truth)
    print(f"\n{len(log)} logged carts; X-learner vs truth\n", x.round(3))
    # Floors that hold on all three seeds (seed 7 alone, above, allows tighter ones). Measured
    # correlation per arm: reminder 0.16 / 0.06 / 0.26, free shipping 0.35 / 0.32 / 0.25,
    # 5 % off 0.45 / 0.31 / 0.42, 10 % off 0.61 / 0.61 / 0.63; a no-skill model: 0.
    assert (x["rmse"] < 0.17).all()
    material = truth.mean().abs() > 0.02  # the reminder's effect is ~0.3 points, mixed in sign
    assert material.sum() == 3 and (x.loc[material, "corr"] > 0.2).all()
    assert (x["corr"] > 0).all() and x["corr"].mean() > 0.3
    # the mean effect within three standard errors of the arm's randomised comparison
    control = y[t == CONTROL]
    for arm in ARMS:
        treated = y[t == arm]
        se = np.sqrt(treated.var() / len(treated) + control.var() / len(control))
        assert abs(x.loc[arm, "mean_predicted"] - x.loc[arm, "mean_true"]) < 3 * se, arm


def test_off_policy_values_cover_the_true_values(
    seeded_fit: tuple[Storefront, pd.DataFrame, CrossFit],
) -> None:
    """DR and SNIPS on the randomised log, for policies built from out-of-fold X-learner
    predictions, one arm to every cart and the oracle, against each policy's true value (the
    simulator's probabilities, the same economics).

    Measured on the demo storefront (~10.5k logged carts, ~2.1k per arm) under three seeds: 35 of
    36 intervals cover the truth; they are wide (half-width ~25k of margin for values of -45k to
    +45k): enough to tell the oracle or the model's policy from blanket discounts, not always the
    model's policy from nothing."""
    store, log, fit = seeded_fit
    catalogue = load_catalogue()
    predicted = expected_margins(log, fit.baseline, fit.effects, catalogue, MARGIN)
    p0, effects = true_effects(store, log["session_id"])
    true = expected_margins(log, p0, effects, catalogue, MARGIN)
    realised = realised_margin(log, catalogue, MARGIN)
    policies = {"model": greedy_policy(predicted), "oracle": greedy_policy(true)}
    policies |= {f"{a} to all": np.full(len(log), a, dtype=object) for a in ARMS}
    rows = []
    for name, actions in policies.items():
        truth = true_value(actions, true)
        for estimator in ("dr", "snips"):
            v = off_policy_value(actions, log, realised, predicted, estimator, seed=1)
            rows.append((name, estimator, truth, v.value, v.lo, v.hi))
    found = pd.DataFrame(rows, columns=["policy", "estimator", "truth", "value", "lo", "hi"])
    found["covered"] = (found["lo"] <= found["truth"]) & (found["truth"] <= found["hi"])
    print("\n", found.round(1).to_string(index=False))
    assert found["covered"].sum() >= len(found) - 1, found
    dr = found[found["estimator"] == "dr"].set_index("policy")
    snips = found[found["estimator"] == "snips"].set_index("policy")
    assert ((dr["hi"] - dr["lo"]) < (snips["hi"] - snips["lo"])).mean() >= 0.8
    # the estimates rank the model above sending the costliest arm to everyone, as the truth does
    assert dr.loc["model", "truth"] > dr.loc["discount_10 to all", "truth"]
    assert dr.loc["model", "value"] > dr.loc["discount_10 to all", "value"]


def test_gate_agrees_with_the_truth_on_every_seed(
    seeded_fit: tuple[Storefront, pd.DataFrame, CrossFit],
) -> None:
    """On three seeds: the model's policy passes and is truly profitable (the simulator's
    probabilities); its effects shuffled across carts make policies that truly lose money, and
    the gate refuses them. Measured (honest DR vs true value of the model's policy): 7 796 vs
    5 939, 26 913 vs 11 705, 3 104 vs 7 712; the arms chosen on the whole log would have been
    valued 2-3x too high on it, and shuffled models would have passed."""
    store, log, oof = seeded_fit
    t, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    fit = calibrated(oof, effect_calibration(oof, t, y))
    catalogue = load_catalogue()
    p0, effects = true_effects(store, log["session_id"])
    true = expected_margins(log, p0, effects, catalogue, MARGIN)
    carts = log.assign(blocked="", segment=None, send_at=pd.Timestamp("2000-01-01"))

    def truly(effects: pd.DataFrame, gate: GateEvidence) -> float:
        options = action_table(carts, fit.baseline, effects, catalogue, MARGIN)
        options = options[options["arm"].isin(gate.allowed_arms)]
        no_caps = ContactRules(0.0, len(carts) + 1)
        plan = choose_actions(carts, options, PlanRules(budget=gate.budget, contact=no_caps))
        return true_value(plan["action"].to_numpy(), true)

    shuffles = {
        seed: fit.effects.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for seed in (3, 4)
    }
    # paired against a global version that is the shuffled model, the model's policy is
    # estimated better (its interval clears 0 on seeds 7 and 8; on seed 9, at ~10k carts, it
    # does not: the move to pilot waits for more log); the other way round, the shuffled one
    # never clears it, so it is never moved.
    # An incumbent that learned from the first half of the log (here: it peeks at those carts'
    # outcomes, shuffled on the rest) looks far better than the model on every cart; compared
    # only on the carts logged after its training, it does not.
    days = pd.to_datetime(log["partition_date"]).dt.date
    middle = sorted(days.unique())[days.nunique() // 2]
    seen = (days <= middle).to_numpy()
    peeked = shuffles[4].copy()
    for arm in peeked.columns:
        won = (log["treatment"] == arm).to_numpy() & (log["converted_7d"] == 1).to_numpy()
        peeked.loc[seen, arm] = np.where(won[seen], 1.0, -1.0)
    good = uplift_gate(
        log,
        fit.baseline,
        fit.effects,
        1 - fit.baseline,
        catalogue,
        MARGIN,
        incumbents={
            "global": Incumbent(fit.baseline, shuffles[3], list(ARMS)),
            "peeked, every cart": Incumbent(fit.baseline, peeked, list(ARMS)),
            "peeked, after": Incumbent(fit.baseline, peeked, list(ARMS), trained_through=middle),
        },
    )
    print("\nmodel", good.policy, truly(fit.effects, good), "vs", good.versus)
    assert good.passed and truly(fit.effects, good) > 0
    assert good.versus["global"].value > 0 and good.versus["global"].carts == len(log)
    flattered, fair = good.versus["peeked, every cart"], good.versus["peeked, after"]
    later = int((~seen).sum())  # counted from the log's own days
    assert 0 < later < len(log) and fair.carts == later and flattered.carts == len(log)
    assert flattered.hi < 0 < fair.value
    assert truly(fit.effects, good) > truly(shuffles[3], good)
    in_use = Incumbent(fit.baseline, fit.effects, good.allowed_arms)
    for shuffled in shuffles.values():
        bad = uplift_gate(
            log,
            fit.baseline,
            shuffled,
            1 - fit.baseline,
            catalogue,
            MARGIN,
            # one version may hold both aliases: compared once
            incumbents={"global": in_use, "pilot": in_use},
            daily_budget=DEMO_BUDGET,  # compared as deployed: one day's budget per logged day
        )
        print("shuffled", bad.policy, truly(shuffled, bad), "vs model", bad.versus)
        assert not bad.passed
        assert bad.versus["global"].lo < 0 and bad.versus["pilot"] is bad.versus["global"]
        assert bad.deployed_budget == DEMO_BUDGET * days.nunique() < bad.budget


def test_plan_against_the_oracle_and_top_k_by_risk(
    seeded_demo_store: tuple[Storefront, Path],
) -> None:
    """Train on the first 11 days' log, plan the abandoned carts of the last 3 days with a budget
    of 150 a day (the arms the off-policy gate keeps; effects calibrated out of fold; each
    shopper's segment as of the cart among the features), and value every policy with the
    simulator's true probabilities: the protocol of `make bench`'s decision-quality curve
    (`benchmarks/decisions.py`) at the demo's traffic, on three seeds.

    Measured (seeds 7 / 8 / 9, ~8.4k training carts): the plan makes 16 % / 31 % / 17 % of the
    oracle's true incremental margin (the oracle knows every cart's true effect; its margin is
    mostly cheap e-mails to the shoppers they move); the feature oracle (XGBoost fitted to the
    true probabilities: the best the features allow) 72 % / 74 % / 78 %, so at this size the
    learner is the limit. The best single arm to the riskiest carts: -2 % / -1 % / 10 %. Without
    the segment features the plan made 6.5 % on seed 7 and the feature oracle ~60 %.
    """
    store, db = seeded_demo_store
    with duckdb.connect(str(db), read_only=True) as con:
        found = decision_quality(store, con, "x-learner", budget_per_day=150.0)
    values = found["values"]
    plan, oracle = values["plan"], values["oracle"]
    single = values["best single arm to the riskiest"]
    ratio = plan["incremental_margin"] / oracle["incremental_margin"]
    print(f"\narms {found['gate'].allowed_arms}\n{values}\nratio {ratio:.3f}")
    violations = constraint_violations(
        found["plan"], found["carts"], found["rules"], found["history"], load_catalogue()
    )
    assert violations == dict.fromkeys(
        [
            "over_budget",
            "contacted_without_consent",
            "contacted_in_holdout",
            "discount_over_cap",
            "unknown_intervention",
            "contact_gap",
            "contact_weekly_cap",
        ],
        0,
    )
    assert found["plan_carts"] > 2000  # the sample is not empty
    assert plan["incremental_margin"] > 0
    assert plan["incremental_margin"] >= 1.2 * max(single["incremental_margin"], 0.0)
    assert ratio >= 0.12  # measured 0.16 / 0.31 / 0.17; 0.065 without the segment features
    # what the features allow is far above what is learnt at this traffic, and below the truth
    fo = values["feature oracle"]["incremental_margin"]
    assert 0.65 * oracle["incremental_margin"] < fo < oracle["incremental_margin"]
    assert plan["incremental_margin"] < fo
