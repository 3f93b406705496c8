"""How a plan is judged: its value against the truth or a model, its totals with intervals, the
rules it breaks, and the uplift model's blocking gate (valued off-policy: decisions/ope.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import NONE, Intervention
from cartintel_assets.decisions.economics import (
    action_table,
    expected_margins,
    realised_margin,
)
from cartintel_assets.decisions.ope import (
    PolicyValue,
    TargetingGain,
    off_policy_value,
    targeting_gain,
)
from cartintel_assets.decisions.plan import (
    ContactRules,
    PlanRules,
    choose_actions,
    top_k_by_risk,
)
from cartintel_assets.models.uplift import CONTROL


def plan_value(plan: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Incremental margin and conversions of a plan's actions, valued with `truth` (an action
    table with the same carts: the simulator's true probabilities, or a model's)."""
    key = truth.set_index(["cart", "arm"])
    taken = plan.index[plan["action"] != NONE]
    rows = key.loc[list(zip(taken, plan.loc[taken, "action"], strict=True))]
    return {
        "incremental_margin": float(rows["incremental_margin"].sum()),
        "incremental_conversions": float(rows["incremental_conversion"].sum()),
        "spend": float(rows["expected_cost"].sum()),
        "treated": int(len(rows)),
    }


def truth_margins(
    truth: pd.DataFrame, catalogue: list[Intervention], margin_rate: float
) -> pd.DataFrame:
    """`economics.expected_margins` from the simulator's true probabilities of buying under each
    arm (`p_conv_<arm>` of its session truth, with cart_value and ship_cost): what a decision on
    those carts truly earns in expectation."""
    p0 = truth[f"p_conv_{CONTROL}"].to_numpy(dtype=float)
    arms = [i.arm for i in catalogue if f"p_conv_{i.arm}" in truth]
    effects = pd.DataFrame({a: truth[f"p_conv_{a}"].to_numpy(dtype=float) - p0 for a in arms})
    carts = pd.DataFrame(
        {
            "cart_value": truth["cart_value"].to_numpy(dtype=float),
            "shipping_cost": truth["ship_cost"].to_numpy(dtype=float),
        }
    )
    return expected_margins(carts, p0, effects, catalogue, margin_rate, CONTROL)


def totals(plan: pd.DataFrame, carts: pd.DataFrame, margin_rate: float) -> dict[str, float]:
    """Expected incremental conversions and margin with 95 % intervals, and the spend (the
    plan's and exploration's, which share the budget).

    The interval covers the randomness of the outcomes given the predicted probabilities (each
    treated cart is bought or not, with or without the action); the model's own error is
    measured separately, out of fold, when it is trained."""
    t = plan["action"] != NONE
    pa, p0 = plan.loc[t, "p_treated"].to_numpy(), plan.loc[t, "p_baseline"].to_numpy()
    var_conv = pa * (1 - pa) + p0 * (1 - p0)
    worth = carts.loc[t, "cart_value"].to_numpy(dtype=float) * margin_rate
    conv, margin = plan["incremental_conversion"].sum(), plan["incremental_margin"].sum()
    half_c = 1.96 * float(np.sqrt(var_conv.sum()))
    half_m = 1.96 * float(np.sqrt((var_conv * worth**2).sum()))
    return {
        "incremental_conversions": float(conv),
        "incremental_conversions_lo": float(conv - half_c),
        "incremental_conversions_hi": float(conv + half_c),
        "incremental_margin": float(margin),
        "incremental_margin_lo": float(margin - half_m),
        "incremental_margin_hi": float(margin + half_m),
        "spend": float(plan["expected_cost"].where(~explored(plan), 0.0).sum()),
        "exploration_spend": float(plan["expected_cost"].where(explored(plan), 0.0).sum()),
        "treated": int(t.sum()),
        "explored": int(explored(plan).sum()),
    }


def explored(plan: pd.DataFrame) -> pd.Series:
    """The carts whose choice was exploration's."""
    if "chosen_by" not in plan:
        return pd.Series(False, index=plan.index)
    return plan["chosen_by"] == "exploration"


_CAP_BREAKS_SQL = """
WITH c AS (SELECT *, row_number() OVER () AS id FROM _contacts)
SELECT
    count(*) FILTER (WHERE EXISTS (
        SELECT 1 FROM c o WHERE o.customer_id = p.customer_id AND o.id <> p.id
        AND abs(epoch(o.sent_at) - epoch(p.sent_at)) < $gap_s)) AS gap,
    count(*) FILTER (WHERE EXISTS (
        SELECT 1 FROM c w WHERE w.customer_id = p.customer_id
        AND w.sent_at <= p.sent_at AND p.sent_at < w.sent_at + INTERVAL 7 DAY
        AND (SELECT count(*) FROM c t WHERE t.customer_id = p.customer_id
             AND t.sent_at >= w.sent_at AND t.sent_at < w.sent_at + INTERVAL 7 DAY) > $per_week
    )) AS weekly
FROM c p WHERE p.planned
"""


def constraint_violations(
    plan: pd.DataFrame,
    carts: pd.DataFrame,
    rules: PlanRules,
    history: pd.DataFrame | None,
    catalogue: list[Intervention],
) -> dict[str, int]:
    """Count every broken rule in a finished plan (a correct plan has zeros everywhere).

    Written apart from the planner's own rule code (`plan.py`), so the two check each other: the
    contact caps are counted in SQL over every contact of the customer (earlier sends and the
    plan's own), per planned contact: another contact closer than the minimum gap, and a 7-day
    window holding more than the weekly maximum. Breaches among past sends alone are not the
    plan's doing and are not counted."""
    t = (plan["action"] != NONE).to_numpy()
    by_arm = {i.arm: i for i in catalogue}
    discount = plan["action"].map(lambda a: by_arm[a].discount if a in by_arm else 0.0)
    segment = carts["segment"] if "segment" in carts else pd.Series(None, index=carts.index)
    cap = segment.map(
        lambda g: min(rules.max_discount, rules.max_discount_by_segment.get(str(g), 1.0))
    )
    planned = pd.DataFrame(
        {
            "customer_id": carts.loc[t, "customer_id"].astype(str).to_numpy(),
            "sent_at": pd.to_datetime(carts.loc[t, "send_at"]).to_numpy(),
            "planned": True,
        }
    )
    earlier = pd.DataFrame(
        {
            "customer_id": (history["customer_id"] if history is not None else []),
            "sent_at": pd.to_datetime(history["sent_at"] if history is not None else []),
        }
    ).astype({"customer_id": str})
    contacts = (
        pd.concat([planned, earlier.assign(planned=False)], ignore_index=True)
        if len(earlier)
        else planned
    )
    con = duckdb.connect()
    try:
        con.register("_contacts", contacts)
        gap, weekly = con.execute(
            _CAP_BREAKS_SQL,
            {
                "gap_s": rules.contact.min_hours_between * 3600,
                "per_week": rules.contact.max_per_week,
            },
        ).fetchall()[0]
    finally:
        con.close()
    return {
        "over_budget": int(plan["expected_cost"].sum() > rules.budget + 1e-6),
        "contacted_without_consent": int((t & ~carts["consent"].to_numpy(dtype=bool)).sum()),
        "contacted_in_holdout": int((t & carts["in_holdout"].to_numpy(dtype=bool)).sum()),
        "discount_over_cap": int((t & (discount.to_numpy() > cap.to_numpy() + 1e-12)).sum()),
        "unknown_intervention": int(sum(a not in by_arm for a in plan.loc[t, "action"])),
        "contact_gap": int(gap),
        "contact_weekly_cap": int(weekly),
    }


def intervention_rates(plan: pd.DataFrame, carts: pd.DataFrame, by: str) -> pd.DataFrame:
    """Share of carts given an intervention (`mean`) and their number (`size`) per value of `by`."""
    treated = (plan["action"] != NONE).to_numpy()
    return pd.Series(treated, index=carts.index).groupby(carts[by].to_numpy()).agg(["mean", "size"])


@dataclass(frozen=True)
class Incumbent:
    """A policy in use, as `uplift_gate` compares a candidate with it: its predictions for the
    logged carts, its allowed arms and the last day of the log it was trained on (None:
    unknown, every cart counts)."""

    baseline: np.ndarray
    effects: pd.DataFrame
    arms: list[str]
    trained_through: date | None = None


@dataclass(frozen=True)
class GateEvidence:
    """Why an uplift model may (or may not) drive the plan, measured out of fold on the log."""

    allowed_arms: list[str]
    excluded_arms: dict[str, str]
    policy: PolicyValue  # DR incremental margin of the budgeted policy with the allowed arms
    # ... over handing out the same actions in the same proportions at random: what the
    # model's targeting adds (`ope.targeting_gain`)
    targeting: TargetingGain
    top_k: PolicyValue  # ... of sending the best average arm to the riskiest carts instead
    top_k_arm: str
    budget: float
    passed: bool
    # the (honest) policy at the deployed budget: what it would earn as it will run
    deployed: PolicyValue
    deployed_budget: float
    # ... over each policy in use (by alias: the `global` and `pilot` versions' policies at the
    # deployed budget, paired on the carts logged after it was trained): what the move to pilot
    # asks of its lower bound; no entry when no cart was logged since
    versus: dict[str, PolicyValue] = field(default_factory=dict)

    @property
    def policy_value(self) -> float:
        return self.policy.value

    @property
    def top_k_value(self) -> float:
        return self.top_k.value


def uplift_gate(
    log: pd.DataFrame,
    baseline: np.ndarray,
    effects: pd.DataFrame,
    risk: np.ndarray,
    catalogue: list[Intervention],
    margin_rate: float,
    budget_share: float = 0.5,
    bootstrap: int = 200,
    incumbents: dict[str, Incumbent] | None = None,
    daily_budget: float | None = None,
) -> GateEvidence:
    """The uplift model's blocking gate, on out-of-fold predictions for the logged carts: the
    policy is judged by what it would earn, valued off-policy (doubly robust, `ope.py`).

    The budget is `budget_share` of what treating every cart with a positive predicted margin
    would cost. The arms are chosen by the policy's value, not one by one: starting from every
    arm, the arm whose removal raises the policy's estimated value most is dropped, while one
    does. An arm that pays only for a subset of carts (a reminder e-mail to the shoppers it
    moves) stays, though its effect over all carts may be indistinguishable from 0. Arms chosen
    by estimates on a log look better on that log (measured 2-3x on the demo's), so the policy's
    value is cross-fitted: each half of the carts is valued with the arms chosen on the other
    half. The gate also asks what the *targeting* adds: the policy against the same actions in
    the same proportions handed out at random, cart by cart (`ope.targeting_gain`). It passes
    when the policy's value is above 0 and above top-k by risk at the same budget (the arm with
    the best average realised margin, sent to the riskiest carts), and its targeting beats
    random allocations of the same actions on the same log (permutation p < 0.05).

    With `daily_budget` (the deployed plan's), the honest policy is also valued at the budget it
    will run with, one day's per logged day (`deployed`). With `incumbents` (the policies in use,
    by alias), it is valued against each incumbent's policy at that budget, paired cart by cart
    (`versus`), on the carts logged after the incumbent was trained: on the carts it learned
    from, an incumbent looks far better than it is (measured on the loop benchmark's log: a
    retrained X-learner 110k *below* the pilot version on all carts, most of which trained
    it). The move to pilot asks each interval's lower bound to clear 0, so a retrained version
    replaces a policy in use only where it would earn more as deployed. (The screening budget
    above is generous, where discounts to many carts pay; at the deployed budget they may not:
    on the loop benchmark a version that passed the screen replaced a better pilot and earned a
    third of it.) Contact caps do not apply to these comparisons."""
    carts = log.reset_index(drop=True).assign(
        blocked="", segment=None, risk=np.asarray(risk), send_at=pd.Timestamp("2000-01-01")
    )
    no_caps = ContactRules(min_hours_between=0.0, max_per_week=len(carts) + 1)
    every = action_table(carts, baseline, effects, catalogue, margin_rate)
    predicted = expected_margins(carts, baseline, effects, catalogue, margin_rate, CONTROL)
    realised = realised_margin(carts, catalogue, margin_rate)
    arm_gain = {
        a: realised[carts["treatment"] == a].mean() - realised[carts["treatment"] == CONTROL].mean()
        for a in every["arm"].unique()
    }
    top_arm = max(arm_gain, key=lambda a: arm_gain[a])
    unlimited = choose_actions(carts, every, PlanRules(budget=float("inf"), contact=no_caps))
    budget = budget_share * float(unlimited["expected_cost"].sum())
    rules = PlanRules(budget=budget, contact=no_caps)

    def value(
        actions: np.ndarray, rows: np.ndarray | None = None, draws: int = bootstrap
    ) -> PolicyValue:
        """The DR value of `actions` on the carts `rows` (all by default); `draws` 0: the
        estimate without its interval."""
        m = np.ones(len(carts), dtype=bool) if rows is None else rows
        return off_policy_value(actions[m], carts[m], realised[m], predicted[m], bootstrap=draws)

    def actions(arms: list[str]) -> np.ndarray:
        return choose_actions(carts, every[every["arm"].isin(arms)], rules)["action"].to_numpy()

    def eliminate(rows: np.ndarray | None) -> tuple[list[str], dict[str, str]]:
        """Starting from every arm, drop the arm whose removal raises the value on `rows` most,
        while one does."""
        arms = list(dict.fromkeys(every["arm"]))
        current, excluded = value(actions(arms), rows, 0), {}
        while arms:
            without = {a: value(actions([b for b in arms if b != a]), rows, 0) for a in arms}
            drop = max(without, key=lambda a: without[a].value)
            if without[drop].value <= current.value:
                break
            excluded[drop] = (
                f"the policy is worth more without it: DR {without[drop].value:,.0f} against"
                f" {current.value:,.0f} with it"
            )
            arms.remove(drop)
            current = without[drop]
        return arms, excluded

    # arms chosen on a log look better on that log: each half of the carts is valued with the
    # arms chosen on the other half (cross-fitting the choice), an honest estimate
    half = np.random.default_rng(0).permutation(len(carts)) % 2 == 0
    chosen = [(fold, eliminate(~fold)[0]) for fold in (half, ~half)]

    def choose_on(
        rows: np.ndarray,
        at: PlanRules,
        base: np.ndarray,
        eff: pd.DataFrame,
        folds: list[tuple[np.ndarray, list[str]]],
    ) -> np.ndarray:
        """The actions of the policy with predictions `base`, `eff` (one row per cart) on the
        carts `rows`, chosen among them within `at`: each fold's carts with that fold's arms."""
        sub = carts[rows].reset_index(drop=True)
        usable = [i for i in catalogue if any(i.arm in arms for _, arms in folds)]
        table = action_table(sub, base[rows], eff[rows].reset_index(drop=True), usable, margin_rate)
        out = np.empty(len(sub), dtype=object)
        for fold, arms in folds:
            picked = choose_actions(sub, table[table["arm"].isin(arms)], at)["action"].to_numpy()
            out[fold[rows]] = picked[fold[rows]]
        return out

    every_cart = np.ones(len(carts), dtype=bool)

    def deployed_rules(rows: np.ndarray) -> PlanRules:
        """The deployed budget over the days of the carts `rows` (without one, the screening
        budget)."""
        if daily_budget is None:
            return rules
        days = carts.loc[rows, "partition_date"].nunique()
        return PlanRules(budget=float(daily_budget) * days, contact=no_caps)

    def versus_on(incumbent: Incumbent) -> PolicyValue | None:
        """The honest policy over the incumbent's, paired, on the carts logged after the
        incumbent's training, each choosing within the deployed budget of those days."""
        rows = every_cart
        if incumbent.trained_through is not None:
            days = pd.to_datetime(carts["partition_date"]).dt.date
            rows = (days > incumbent.trained_through).to_numpy()
        if not rows.any():
            return None
        at = deployed_rules(rows)
        ours = choose_on(rows, at, baseline, effects, chosen)
        theirs = choose_on(
            rows, at, incumbent.baseline, incumbent.effects, [(every_cart, incumbent.arms)]
        )
        return off_policy_value(
            ours,
            carts[rows].reset_index(drop=True),
            realised[rows],
            predicted[rows].reset_index(drop=True),
            bootstrap=bootstrap,
            against=theirs,
        )

    arms, excluded = eliminate(None)
    policy = value(choose_on(every_cart, rules, baseline, effects, chosen))
    targeting = targeting_gain(actions(arms), carts, realised, predicted, seed=1)
    top_k = value(top_k_by_risk(carts, every, top_arm, rules)["action"].to_numpy())
    # as it will run: at the deployed budget (without one, the screening budget)
    at = deployed_rules(every_cart)
    deployed = (
        policy
        if daily_budget is None
        else value(choose_on(every_cart, at, baseline, effects, chosen))
    )
    # one comparison per incumbent: the same version may hold `global` and `pilot`
    compared: dict[int, PolicyValue | None] = {}
    for incumbent in (incumbents or {}).values():
        if id(incumbent) not in compared:
            compared[id(incumbent)] = versus_on(incumbent)
    versus = {
        alias: found
        for alias, incumbent in (incumbents or {}).items()
        if (found := compared[id(incumbent)]) is not None
    }
    return GateEvidence(
        allowed_arms=arms,
        excluded_arms=excluded,
        policy=policy,
        targeting=targeting,
        top_k=top_k,
        top_k_arm=top_arm,
        budget=budget,
        passed=bool(arms) and policy.value > max(top_k.value, 0.0) and targeting.p_value < 0.05,
        deployed=deployed,
        deployed_budget=at.budget,
        versus=versus,
    )


def incremental_margin(rows: pd.DataFrame, realised: np.ndarray) -> tuple[float, float, int, int]:
    """Realised margin per cart of the policy's carts (plan and exploration) over the holdout's,
    its standard error (Welch), and the two counts."""
    policy = realised[rows["chosen_by"].isin(["plan", "exploration"]).to_numpy()]
    holdout = realised[(rows["chosen_by"] == "holdout").to_numpy()]
    if len(policy) < 2 or len(holdout) < 2:
        return float("nan"), float("nan"), len(policy), len(holdout)
    lift = float(policy.mean() - holdout.mean())
    se = float(np.sqrt(policy.var(ddof=1) / len(policy) + holdout.var(ddof=1) / len(holdout)))
    return lift, se, len(policy), len(holdout)


def realised_against_holdout(
    decisions: pd.DataFrame, realised: np.ndarray, by: list[str]
) -> pd.DataFrame:
    """Per group of `by` (e.g. day and policy version): what the plan's decisions realised over
    the persistent holdout, as totals over the policy's carts with 95 % intervals: incremental
    margin (`realised`: each decided cart's margin under its arm) and incremental conversions.

    `decisions`: the logged decisions (chosen_by plan, exploration or holdout) with
    `converted_7d` and the `by` columns."""
    rows = []
    converted = decisions["converted_7d"].to_numpy(dtype=float)
    for key, g in decisions.groupby(by, sort=True):
        at = decisions.index.get_indexer(g.index)
        lift, se, n_policy, n_holdout = incremental_margin(g, realised[at])
        c_lift, c_se, _, _ = incremental_margin(g, converted[at])
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                "decided_carts": n_policy,
                "holdout_carts": n_holdout,
                "incremental_conversions": c_lift * n_policy,
                "incremental_conversions_lo": (c_lift - 1.96 * c_se) * n_policy,
                "incremental_conversions_hi": (c_lift + 1.96 * c_se) * n_policy,
                "incremental_margin": lift * n_policy,
                "incremental_margin_lo": (lift - 1.96 * se) * n_policy,
                "incremental_margin_hi": (lift + 1.96 * se) * n_policy,
            }
        )
    columns = [*by, "decided_carts", "holdout_carts", "incremental_conversions"]
    columns += ["incremental_conversions_lo", "incremental_conversions_hi", "incremental_margin"]
    columns += ["incremental_margin_lo", "incremental_margin_hi"]
    return pd.DataFrame(rows, columns=columns)
