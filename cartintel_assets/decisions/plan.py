"""The budgeted choice: which intervention, if any, each cart gets within the budget, consent,
contact caps, discount caps and the persistent holdout; and the top-k-by-risk yardstick."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import NONE
from cartintel_assets.decisions.economics import ACTION_COLUMNS


@dataclass(frozen=True)
class ContactRules:
    """Contact caps per customer (Klaviyo Smart Sending's default gap is 16 h)."""

    min_hours_between: float = 16.0
    max_per_week: int = 3

    def violation(self, earlier: list[pd.Timestamp], at: pd.Timestamp) -> str | None:
        """Why a contact at `at` would break a cap given the customer's other contacts."""
        if self.max_per_week >= 1 and (
            not earlier or (self.min_hours_between <= 0 and len(earlier) < self.max_per_week)
        ):
            return None  # no cap can bind (most customers: no earlier contact at all)
        gap = timedelta(hours=self.min_hours_between)
        if any(abs(at - t) < gap for t in earlier):
            return f"contact cap: another contact within {self.min_hours_between:g} h"
        times = sorted([*earlier, at])
        week = timedelta(days=7)
        for start in times:
            if start <= at < start + week and sum(start <= t < start + week for t in times) > (
                self.max_per_week
            ):
                return f"contact cap: more than {self.max_per_week} contacts in 7 days"
        return None


@dataclass(frozen=True)
class PlanRules:
    """What a plan must respect besides value."""

    budget: float
    contact: ContactRules = field(default_factory=ContactRules)
    max_discount: float = 0.10
    max_discount_by_segment: dict[str, float] = field(default_factory=dict)


def latest_consent_sql(through: str | None = None) -> str:
    """Each customer's latest marketing consent in `raw_customers` (a later day's record of a
    customer replaces the earlier: a withdrawal lands as a new record), up to the day the SQL
    expression `through` names, if given. The daily plan and the scoring service read it."""
    bound = f" WHERE partition_date <= {through}" if through else ""
    return (
        "SELECT customer_id, arg_max(marketing_consent, partition_date) AS consent"
        f" FROM raw_customers{bound} GROUP BY customer_id"
    )


def unit_hash(keys: Iterable[Any], salt: str) -> np.ndarray:
    """A number in [0, 1) per key from the hash of (salt, key): the same key and salt always give
    the same number, so a draw made with it can be repeated and audited."""

    def u(key: str) -> float:
        digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return np.array([u(str(k)) for k in keys], dtype=float)


def in_holdout(customer_ids: Iterable[Any], share: float, salt: str) -> np.ndarray:
    """A persistent holdout: a customer is in it when the hash of (salt, pseudonym) falls below
    `share`, on every day and in every plan, so incrementality can be measured against it."""
    return unit_hash(customer_ids, salt) < share


def contacts_by_customer(history: pd.DataFrame | None) -> dict[str, list[pd.Timestamp]]:
    """Earlier contacts (customer_id, sent_at) as send times per customer."""
    contacts: dict[str, list[pd.Timestamp]] = {}
    if history is not None:
        for cid, at in zip(history["customer_id"], history["sent_at"], strict=True):
            contacts.setdefault(str(cid), []).append(pd.Timestamp(at))
    return contacts


def discount_cap(rules: PlanRules, segment: Any) -> float:
    return min(rules.max_discount, rules.max_discount_by_segment.get(str(segment), 1.0))


def choose_actions(
    carts: pd.DataFrame,
    options: pd.DataFrame,
    rules: PlanRules,
    history: pd.DataFrame | None = None,
    order: np.ndarray | None = None,
) -> pd.DataFrame:
    """The action per cart that maximises total incremental margin within the rules.

    `carts` (one row per cart, positions match `options.cart`) needs customer_id, send_at,
    segment and `blocked` (why the cart may not be contacted at all, or empty). `history` holds
    earlier contacts (customer_id, sent_at) for the caps. The budget is allocated by a Lagrangian
    relaxation of the multiple-choice knapsack (pick per cart the option maximising
    margin − λ·cost, with the smallest λ whose spend fits), then contact caps are enforced in order
    of value and left-over budget is filled greedily. With `order` (a priority per cart, higher
    first) the value is ignored: carts are taken in that order with their only option while the
    budget lasts, the "top-k" yardstick.
    """
    n = len(carts)
    out = choose(
        blocked=carts["blocked"].fillna("").astype(str).to_numpy(),
        segment=carts["segment"].to_numpy() if "segment" in carts else np.full(n, None),
        customer=carts["customer_id"].astype(str).to_numpy(),
        send_at=pd.to_datetime(carts["send_at"]).to_numpy(),
        options={c: options[c].to_numpy() for c in ACTION_COLUMNS},
        rules=rules,
        contacts=contacts_by_customer(history),
        order=order,
    )
    return pd.DataFrame(out)


def choose(
    blocked: np.ndarray,
    segment: np.ndarray,
    customer: np.ndarray,
    send_at: np.ndarray,
    options: Mapping[str, np.ndarray],
    rules: PlanRules,
    contacts: dict[str, list[pd.Timestamp]],
    order: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """`choose_actions` on numpy columns (one entry per cart; `options` as `option_columns`
    makes them; `contacts`: earlier contacts per customer, extended with the chosen ones)."""
    n = len(blocked)
    blocked = np.asarray(blocked, dtype=object)
    cart_all = np.asarray(options["cart"], dtype=np.int64)
    keep = blocked[cart_all] == ""
    caps = np.array([discount_cap(rules, s) for s in segment], dtype=float)[cart_all]
    keep &= np.asarray(options["discount"], dtype=float) <= caps + 1e-12
    if order is None:
        keep &= np.asarray(options["incremental_margin"], dtype=float) > 0
    opts = {k: np.asarray(v)[keep] for k, v in options.items()}
    cart_idx = opts["cart"].astype(np.int64)
    value = opts["incremental_margin"].astype(float)
    cost = opts["expected_cost"].astype(float)

    def pick(lam: float) -> np.ndarray:
        """Row of `opts` chosen per cart at multiplier `lam` (-1: none pays)."""
        score = value - lam * cost
        rows = np.flatnonzero(score > 0)
        rows = rows[np.argsort(-score[rows], kind="stable")]
        carts_, first = np.unique(cart_idx[rows], return_index=True)
        best = np.full(n, -1)
        best[carts_] = rows[first]
        return best

    def spend_at(lam: float) -> float:
        c = pick(lam)
        return float(cost[c[c >= 0]].sum())

    if order is None:
        lam = 0.0
        if spend_at(0.0) > rules.budget:
            lo, hi = 0.0, float(np.max(value / np.maximum(cost, 1e-9), initial=0.0)) + 1.0
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if spend_at(mid) > rules.budget else (lo, mid)
            lam = hi
        chosen = pick(lam)
        score = np.append(value - lam * cost, -np.inf)  # index -1: no option
        priority = score[chosen]
    else:
        chosen = np.full(n, -1)
        chosen[cart_idx] = np.arange(len(cart_idx))
        priority = np.where(chosen >= 0, np.asarray(order, dtype=float), -np.inf)

    action = np.full(n, -1)
    reason = blocked.copy()
    spend = 0.0

    def try_take(c: int, r: int) -> str | None:
        nonlocal spend
        if spend + cost[r] > rules.budget + 1e-9:
            return "budget exhausted"
        at = pd.Timestamp(send_at[c])
        why = rules.contact.violation(contacts.get(customer[c], []), at)
        if why:
            return why
        contacts.setdefault(customer[c], []).append(at)
        action[c], spend = r, spend + cost[r]
        return None

    for c in np.argsort(-priority, kind="stable"):
        if chosen[c] < 0 or not np.isfinite(priority[c]):
            continue
        why = try_take(c, chosen[c])
        if why:
            reason[c] = why
    if order is None:  # fill what the caps and the multiplier left unspent, best ratio first
        ratio = value / np.maximum(cost, 1e-9)
        for r in np.argsort(-ratio, kind="stable"):
            c = cart_idx[r]
            free = action[c] < 0 and not reason[c].startswith("contact cap")
            if free and try_take(c, r) is None:
                reason[c] = ""
    has_option = np.zeros(n, dtype=bool)
    has_option[cart_idx] = True
    for c in range(n):
        if action[c] < 0 and not reason[c]:
            reason[c] = "budget exhausted" if has_option[c] else "no intervention pays"
    taken = action >= 0
    at = np.maximum(action, 0)

    def col(k: str, fill: Any) -> np.ndarray:
        if not len(cart_idx):
            return np.full(
                n, fill, dtype=object if fill is None or isinstance(fill, str) else float
            )
        return np.where(taken, opts[k][at], fill)

    return {
        "action": col("arm", NONE),
        "intervention_id": col("intervention_id", None),
        "reason": np.where(taken, "", reason),
        "p_treated": col("p_treated", np.nan).astype(float),
        "p_baseline": col("p_baseline", np.nan).astype(float),
        "incremental_conversion": col("incremental_conversion", 0.0).astype(float),
        "incremental_margin": col("incremental_margin", 0.0).astype(float),
        "expected_cost": col("expected_cost", 0.0).astype(float),
    }


def top_k_by_risk(
    carts: pd.DataFrame,
    options: pd.DataFrame,
    arm: str,
    rules: PlanRules,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The yardstick: send `arm` to the riskiest contactable carts until the budget is spent."""
    return choose_actions(
        carts, options[options["arm"] == arm], rules, history, order=carts["risk"].to_numpy()
    )


def explore_and_choose(
    carts: pd.DataFrame,
    options: pd.DataFrame,
    rules: PlanRules,
    history: pd.DataFrame | None,
    share: float,
    salt: str,
    budget_share: float = 1.0,
) -> pd.DataFrame:
    """The plan with exploration, and the propensity of every decision it logs, within the
    day's budget.

    A share of the carts that may be contacted (`blocked` empty), picked by a hash of
    (salt, session_id), gets a uniformly random choice among no intervention and the arms it may
    have (`options` rows, within its segment's discount cap; none if a contact would break a cap
    at that time, or if its expected cost would take the day's spend over the budget). That
    share is `share`, lowered on days where exploring it would be expected to spend more than
    `budget_share` of the budget (`exploration_share` in `plan.attrs` says which was used).
    The others get what `choose_actions` gives them with what exploration left of the budget.
    `propensity` is the chance the logged choice had under this policy: share / k + (1 - share)
    * [the plan's choice], k the cart's choices, the plan's choice being what it picks with
    every cart in play. Holdout carts log no intervention with propensity 1; carts that may not
    be contacted log nothing."""
    n = len(carts)
    blocked = carts["blocked"].fillna("").astype(str).to_numpy()
    eligible = blocked == ""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the exploration share must be in [0, 1), not {share}")
    if not 0.0 <= budget_share <= 1.0:
        raise ValueError(f"exploration's share of the budget must be in [0, 1], not {budget_share}")
    greedy = choose_actions(carts, options, rules, history)
    caps = np.array(
        [discount_cap(rules, g) for g in carts.get("segment", pd.Series(None, index=carts.index))]
    )
    cart_of = options["cart"].to_numpy(dtype=np.int64)
    allowed = options["discount"].to_numpy(dtype=float) <= caps[cart_of] + 1e-12
    rows_of: dict[int, list[int]] = {}
    for r in np.flatnonzero(allowed):
        rows_of.setdefault(int(cart_of[r]), []).append(int(r))
    cost = options["expected_cost"].to_numpy(dtype=float)
    # what exploring every contactable cart would be expected to spend: a uniform choice among
    # no intervention and its arms; the share is lowered so exploration expects its allowance
    everyone = sum(
        float(cost[rows_of.get(int(c), [])].sum()) / (len(rows_of.get(int(c), [])) + 1)
        for c in np.flatnonzero(eligible)
    )
    allowance = budget_share * rules.budget
    if everyone * share > allowance:
        share = allowance / everyone
    explored = eligible & (unit_hash(carts["session_id"], salt) < share)
    draw = unit_hash(carts["session_id"], f"{salt}:arm")
    contacts = contacts_by_customer(history)
    customer = carts["customer_id"].astype(str).to_numpy()
    send_at = pd.to_datetime(carts["send_at"]).to_numpy()
    picked = np.full(n, -1)  # option row drawn per explored cart (-1: no intervention)
    choices = np.ones(n)
    spent = 0.0
    for c in np.flatnonzero(explored)[np.argsort(send_at[explored], kind="stable")]:
        at = pd.Timestamp(send_at[c])
        rows = [r for r in rows_of.get(int(c), []) if spent + cost[r] <= rules.budget + 1e-9]
        if rows and rules.contact.violation(contacts.get(customer[c], []), at):
            rows = []
        choices[c] = len(rows) + 1
        k = int(draw[c] * choices[c])
        if k > 0:
            picked[c] = rows[k - 1]
            spent += cost[picked[c]]
            contacts.setdefault(customer[c], []).append(at)
    for c in np.flatnonzero(eligible & ~explored):
        choices[c] = len(rows_of.get(int(c), [])) + 1
    done = pd.DataFrame({"customer_id": customer[picked >= 0], "sent_at": send_at[picked >= 0]})
    rest = carts.assign(blocked=np.where(explored, "exploration", blocked))
    parts = [h for h in (history, done) if h is not None and len(h)]
    plan = choose_actions(
        rest,
        options,
        replace(rules, budget=max(rules.budget - spent, 0.0)),
        pd.concat(parts, ignore_index=True) if parts else None,
    )
    for c in np.flatnonzero(explored):
        r = picked[c]
        for col, value in (
            ("action", options["arm"].iat[r] if r >= 0 else NONE),
            ("intervention_id", options["intervention_id"].iat[r] if r >= 0 else None),
            ("reason", "" if r >= 0 else "exploration: no intervention"),
            ("p_treated", options["p_treated"].iat[r] if r >= 0 else np.nan),
            ("p_baseline", options["p_baseline"].iat[r] if r >= 0 else np.nan),
            ("incremental_conversion", options["incremental_conversion"].iat[r] if r >= 0 else 0.0),
            ("incremental_margin", options["incremental_margin"].iat[r] if r >= 0 else 0.0),
            ("expected_cost", options["expected_cost"].iat[r] if r >= 0 else 0.0),
        ):
            plan.loc[c, col] = value
    same = (plan["action"] == greedy["action"]).to_numpy()
    propensity = share / choices + (1 - share) * np.where(explored, same, True)
    holdout = blocked == "holdout"
    plan["chosen_by"] = np.select(
        [explored, eligible, holdout], ["exploration", "plan", "holdout"], ""
    )
    plan["propensity"] = np.select([eligible, holdout], [propensity, 1.0], np.nan)
    plan.attrs["exploration_share"] = share
    return plan


DISPARITY = "disparity bound"


def within_disparity(
    plan: pd.DataFrame, groups: pd.DataFrame, bound: float, min_group_size: int
) -> pd.DataFrame:
    """`plan` with the fewest, least valuable of its own contacts withdrawn so that, for every
    column of `groups` (e.g. region, device, new vs returning; rows: the carts the rates are
    taken over, indexed like `plan`), the intervention rates of the groups with at least
    `min_group_size` carts lie within `bound` of each other.

    Only the plan's own choices (`chosen_by` "plan") are withdrawn, reason "disparity bound";
    exploration stays uniform and the holdout untouched. Withdrawing only lowers spend, so the
    budget still holds. If exploration alone breaks the bound, the plan is left as it is and
    the blocking check refuses it."""
    plan = plan.copy()
    rows = groups.index
    labels = {by: groups[by].astype(str).to_numpy() for by in groups.columns}
    margin = plan.loc[rows, "incremental_margin"].to_numpy(dtype=float)
    own = (plan.loc[rows, "chosen_by"] == "plan").to_numpy()
    for _ in range(10 * len(labels) + 10):
        treated = (plan.loc[rows, "action"] != NONE).to_numpy()
        worst: tuple[float, str, str, float] | None = None  # gap, column, top group, floor
        for by, label in labels.items():
            rate = pd.Series(treated).groupby(label).agg(["mean", "size"])
            big = rate[rate["size"] >= min_group_size]["mean"]
            if len(big) > 1 and big.max() - big.min() > bound + 1e-12:
                gap = float(big.max() - big.min())
                if worst is None or gap > worst[0]:
                    worst = (gap, by, str(big.idxmax()), float(big.min()) + bound)
        if worst is None:
            break
        _, by, top, ceiling = worst
        members = labels[by] == top
        excess = int(np.ceil(treated[members].sum() - ceiling * members.sum() - 1e-9))
        candidates = np.flatnonzero(members & treated & own)
        if not len(candidates) or excess <= 0:
            break
        drop = candidates[np.argsort(margin[candidates], kind="stable")[:excess]]
        at = rows[drop]
        plan.loc[at, "action"] = NONE
        plan.loc[at, "intervention_id"] = None
        plan.loc[at, "reason"] = DISPARITY
        plan.loc[at, ["p_treated", "p_baseline"]] = np.nan
        plan.loc[at, ["incremental_conversion", "incremental_margin", "expected_cost"]] = 0.0
    return plan
