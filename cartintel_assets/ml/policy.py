"""Which intervention, if any, each abandoned cart should get: the catalogue and its linter, the
economics of an action, the rules (budget, consent, contact caps, discount caps, holdout) and the
budgeted choice, plus the yardsticks a plan is judged by (top-k by risk, the oracle, policy
value). No Dagster import.

Economics of sending intervention a to a cart of value v with shipping cost s, when p0 is the
chance it is bought anyway and p_a the chance with a (p_a = p0 + predicted uplift):
    expected cost          = send cost + p_a * (discount * v + free shipping * s)
    incremental margin     = (p_a - p0) * v * margin rate - p_a * (discount * v + free shipping * s)
                             - send cost
so a discount given to someone who would have bought anyway counts against it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cartintel_assets.ml.schema import TREATMENTS
from cartintel_assets.ml.uplift import CONTROL

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[1] / "catalogues" / "interventions.yaml"
NONE = "none"

# ---- the catalogue and its linter --------------------------------------------------------------

_URGENCY = re.compile(
    r"\b(hurry|last chance|ends (soon|today|tonight)|only today|today only|expires? (soon|today)"
    r"|don'?t miss|act now|before it'?s gone|countdown|time is running out)\b",
    re.IGNORECASE,
)
_SCARCITY = re.compile(
    r"\b(only \d+ left|\d+ left in stock|low stock|almost (gone|sold out)|selling fast"
    r"|limited stock|few left|nearly sold out)\b",
    re.IGNORECASE,
)
_SHAMING = re.compile(
    r"\b(no thanks,? i (don'?t|do not) (like|want|need) (saving|savings|deals|discounts|money)"
    r"|i (prefer|like) (paying|to pay) full price|i'?m not interested in saving)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AddOn:
    name: str
    price: float
    pre_checked: bool = False


@dataclass(frozen=True)
class Intervention:
    """One entry of the catalogue: what is sent, what it costs and the claims it makes."""

    id: str
    arm: str
    channel: str
    send_cost: float
    subject: str
    body: str
    discount: float = 0.0
    free_shipping: bool = False
    expires_hours: float | None = None  # a real, enforced expiry of the offer
    countdown: bool = False  # shows a countdown to the expiry
    timer_resets: bool = False  # the countdown restarts (for each visit or email)
    scarcity_claim: bool = False  # claims limited stock
    inventory_backed: bool = False  # the stock claim is computed from live inventory
    add_ons: tuple[AddOn, ...] = ()
    decline_text: str = ""


@dataclass(frozen=True)
class Finding:
    """A manipulative design the linter refuses, by FTC dark-pattern category."""

    intervention: str
    rule: str
    detail: str


def lint_intervention(item: Intervention) -> list[Finding]:
    """Every manipulative pattern in one catalogue entry (empty when it is honest)."""
    text = f"{item.subject}\n{item.body}"
    out: list[Finding] = []

    def flag(rule: str, detail: str) -> None:
        out.append(Finding(item.id, rule, detail))

    if item.countdown and item.expires_hours is None:
        flag("false_urgency", "a countdown without a real expiry of the offer")
    if item.timer_resets:
        flag("false_urgency", "a timer that resets")
    if (m := _URGENCY.search(text)) and item.expires_hours is None:
        flag("false_urgency", f"urgency wording {m.group(0)!r} without a real expiry")
    if item.scarcity_claim and not item.inventory_backed:
        flag("false_scarcity", "a low-stock claim not backed by inventory")
    if (m := _SCARCITY.search(text)) and not item.inventory_backed:
        flag("false_scarcity", f"scarcity wording {m.group(0)!r} not backed by inventory")
    for add_on in item.add_ons:
        if add_on.pre_checked:
            flag("sneaking", f"the add-on {add_on.name!r} is pre-checked")
    if m := _SHAMING.search(item.decline_text):
        flag("confirmshaming", f"the decline option shames: {m.group(0)!r}")
    return out


class ManipulativeDesignError(ValueError):
    """The catalogue holds at least one manipulative design; nothing is planned from it."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "; ".join(f"{f.intervention}: {f.rule} ({f.detail})" for f in findings)
        super().__init__(f"the intervention catalogue is refused: {lines}")


def parse_catalogue(doc: dict[str, Any], source: str = "catalogue") -> list[Intervention]:
    """Validate a catalogue document and lint every entry; manipulative designs are refused."""
    items = doc.get("interventions") if isinstance(doc, dict) else None
    if not items:
        raise ValueError(f"{source}: expected a non-empty list under 'interventions'")
    known = set(Intervention.__dataclass_fields__)
    out: list[Intervention] = []
    for raw in items:
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"{source}: entry {raw.get('id')!r} has unknown fields {sorted(unknown)}"
            )
        add_ons = tuple(AddOn(**a) for a in raw.get("add_ons") or ())
        item = Intervention(**{**raw, "add_ons": add_ons})
        if item.arm not in TREATMENTS or item.arm == CONTROL:
            raise ValueError(
                f"{source}: {item.id} names arm {item.arm!r}; expected one of {TREATMENTS[1:]}"
            )
        if not 0 <= item.discount < 1 or item.send_cost < 0:
            raise ValueError(f"{source}: {item.id} needs 0 <= discount < 1 and send_cost >= 0")
        out.append(item)
    ids = [i.id for i in out]
    if len(set(ids)) != len(ids) or len({i.arm for i in out}) != len(out):
        raise ValueError(f"{source}: ids and arms must be unique (one entry per arm)")
    findings = [f for item in out for f in lint_intervention(item)]
    if findings:
        raise ManipulativeDesignError(findings)
    return out


def load_catalogue(path: Path | str = DEFAULT_CATALOGUE) -> list[Intervention]:
    return parse_catalogue(yaml.safe_load(Path(path).read_text()), str(path))


# ---- economics ---------------------------------------------------------------------------------

ACTION_COLUMNS: tuple[str, ...] = (
    "cart",
    "arm",
    "intervention_id",
    "discount",
    "p_treated",
    "p_baseline",
    "incremental_conversion",
    "expected_cost",
    "incremental_margin",
)


def _paid_if_bought(item: Intervention, value: np.ndarray, shipping: np.ndarray) -> np.ndarray:
    """What an intervention costs on a cart that is bought: the discount and the shipping."""
    return item.discount * value + item.free_shipping * shipping


def action_table(
    carts: pd.DataFrame,
    baseline: np.ndarray,
    effects: pd.DataFrame | Mapping[str, np.ndarray],
    catalogue: list[Intervention],
    margin_rate: float,
) -> pd.DataFrame:
    """Every (cart, intervention) pair: the chance of buying with it, the incremental conversion,
    the expected cost and the incremental margin (see the module docstring). `carts` needs
    cart_value and shipping_cost; `effects` one column per arm, aligned with `carts`."""
    return pd.DataFrame(
        option_columns(
            np.asarray(carts["cart_value"], dtype=float),
            np.asarray(carts["shipping_cost"], dtype=float),
            baseline,
            effects,
            catalogue,
            margin_rate,
        ),
        columns=list(ACTION_COLUMNS),
    )


def option_columns(
    cart_value: np.ndarray,
    shipping_cost: np.ndarray,
    baseline: np.ndarray,
    effects: pd.DataFrame | Mapping[str, np.ndarray],
    catalogue: list[Intervention],
    margin_rate: float,
) -> dict[str, np.ndarray]:
    """`action_table` as numpy columns (ACTION_COLUMNS), the options of cart 0, then 1, ... per
    catalogue entry."""
    v = np.asarray(cart_value, dtype=float)
    s = np.nan_to_num(np.asarray(shipping_cost, dtype=float))
    p0 = np.clip(np.asarray(baseline, dtype=float), 0, 1)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ACTION_COLUMNS}
    n = len(v)
    for item in catalogue:
        if item.arm not in effects:
            continue
        pa = np.clip(p0 + np.asarray(effects[item.arm], dtype=float), 0, 1)
        if_bought = _paid_if_bought(item, v, s)
        for k, col in (
            ("cart", np.arange(n)),
            ("arm", np.full(n, item.arm, dtype=object)),
            ("intervention_id", np.full(n, item.id, dtype=object)),
            ("discount", np.full(n, item.discount, dtype=float)),
            ("p_treated", pa),
            ("p_baseline", p0),
            ("incremental_conversion", pa - p0),
            ("expected_cost", item.send_cost + pa * if_bought),
            ("incremental_margin", (pa - p0) * v * margin_rate - pa * if_bought - item.send_cost),
        ):
            parts[k].append(col)
    if not parts["cart"]:  # no usable intervention: no option for any cart
        return {
            c: np.array([], dtype=object if c in ("arm", "intervention_id") else float)
            for c in ACTION_COLUMNS
        }
    return {k: np.concatenate(v) for k, v in parts.items()}


def realised_margin(
    log: pd.DataFrame, catalogue: list[Intervention], margin_rate: float
) -> np.ndarray:
    """The margin each logged cart actually made under its arm (control: no cost)."""
    v = log["cart_value"].to_numpy(dtype=float)
    s = np.nan_to_num(log["shipping_cost"].to_numpy(dtype=float))
    y = log["converted_7d"].to_numpy(dtype=float)
    arm = log["treatment"].to_numpy()
    out = y * v * margin_rate
    for item in catalogue:
        m = arm == item.arm
        out[m] -= item.send_cost + y[m] * _paid_if_bought(item, v[m], s[m])
    return out


# ---- rules and the budgeted choice ---------------------------------------------------------------


@dataclass(frozen=True)
class ContactRules:
    """Contact caps per customer (Klaviyo Smart Sending's default gap is 16 h)."""

    min_hours_between: float = 16.0
    max_per_week: int = 3

    def violation(self, earlier: list[pd.Timestamp], at: pd.Timestamp) -> str | None:
        """Why a contact at `at` would break a cap given the customer's other contacts."""
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


def in_holdout(customer_ids: Iterable[Any], share: float, salt: str) -> np.ndarray:
    """A persistent holdout: a customer is in it when the hash of (salt, pseudonym) falls below
    `share`, on every day and in every plan, so incrementality can be measured against it."""

    def u(cid: str) -> float:
        digest = hashlib.sha256(f"{salt}:{cid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return np.array([u(str(c)) < share for c in customer_ids], dtype=bool)


def _contacts_by_customer(history: pd.DataFrame | None) -> dict[str, list[pd.Timestamp]]:
    """Earlier contacts (customer_id, sent_at) as send times per customer."""
    contacts: dict[str, list[pd.Timestamp]] = {}
    if history is not None:
        for cid, at in zip(history["customer_id"], history["sent_at"], strict=True):
            contacts.setdefault(str(cid), []).append(pd.Timestamp(at))
    return contacts


def _discount_cap(rules: PlanRules, segment: Any) -> float:
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
        contacts=_contacts_by_customer(history),
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
    caps = np.array([_discount_cap(rules, segment[c]) for c in cart_all], dtype=float)
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


def totals(plan: pd.DataFrame, carts: pd.DataFrame, margin_rate: float) -> dict[str, float]:
    """Expected incremental conversions and margin with 95 % intervals, and the spend.

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
        "spend": float(plan["expected_cost"].sum()),
        "treated": int(t.sum()),
    }


def constraint_violations(
    plan: pd.DataFrame,
    carts: pd.DataFrame,
    rules: PlanRules,
    history: pd.DataFrame | None,
    catalogue: list[Intervention],
) -> dict[str, int]:
    """Count every broken rule in a finished plan (a correct plan has zeros everywhere)."""
    t = (plan["action"] != NONE).to_numpy()
    by_arm = {i.arm: i for i in catalogue}
    discount = np.array([by_arm[a].discount if a in by_arm else 0.0 for a in plan["action"]])
    seg = carts["segment"].to_numpy() if "segment" in carts else np.full(len(carts), None)
    caps = np.array([_discount_cap(rules, s) for s in seg])
    # every planned contact must keep the caps against the customer's other contacts (earlier
    # sends, and the plan's own); breaches among past sends alone are not the plan's doing
    contacts = _contacts_by_customer(history)
    planned = list(
        zip(
            carts.loc[t, "customer_id"].astype(str),
            pd.to_datetime(carts.loc[t, "send_at"]),
            strict=True,
        )
    )
    for cid, at in planned:
        contacts.setdefault(cid, []).append(pd.Timestamp(at))
    cap_breaks = 0
    for cid, at in planned:
        others = list(contacts[cid])
        others.remove(pd.Timestamp(at))
        cap_breaks += rules.contact.violation(others, pd.Timestamp(at)) is not None
    return {
        "over_budget": int(plan["expected_cost"].sum() > rules.budget + 1e-6),
        "contacted_without_consent": int((t & ~carts["consent"].to_numpy(dtype=bool)).sum()),
        "contacted_in_holdout": int((t & carts["in_holdout"].to_numpy(dtype=bool)).sum()),
        "discount_over_cap": int((t & (discount > caps + 1e-12)).sum()),
        "unknown_intervention": int(sum(a not in by_arm for a in plan.loc[t, "action"])),
        "contact_cap": int(cap_breaks),
    }


def intervention_rates(plan: pd.DataFrame, carts: pd.DataFrame, by: str) -> pd.DataFrame:
    """Share of carts given an intervention (`mean`) and their number (`size`) per value of `by`."""
    treated = (plan["action"] != NONE).to_numpy()
    return pd.Series(treated, index=carts.index).groupby(carts[by].to_numpy()).agg(["mean", "size"])


def dr_policy_value(
    actions: np.ndarray,
    log: pd.DataFrame,
    predicted_margin: pd.DataFrame,
    realised: np.ndarray,
) -> float:
    """Doubly robust estimate, on the randomised log, of the total incremental margin of giving
    each logged cart `actions[i]` (an arm or none) instead of nothing. `predicted_margin` has
    one column per arm and control (the model's expected margin); arms were assigned with the
    log's own shares, so the estimate is unbiased whatever the model's error."""
    arm = log["treatment"].to_numpy()
    share = pd.Series(arm).value_counts(normalize=True)
    a = np.where(actions == NONE, CONTROL, actions)

    def dr(choice: np.ndarray) -> np.ndarray:
        m_hat = predicted_margin.to_numpy()[
            np.arange(len(log)), [predicted_margin.columns.get_loc(c) for c in choice]
        ]
        hit = arm == choice
        e = share.reindex(choice).to_numpy()
        return m_hat + np.where(hit, (realised - m_hat) / e, 0.0)

    return float((dr(a) - dr(np.full(len(log), CONTROL))).sum())


@dataclass(frozen=True)
class GateEvidence:
    """Why an uplift model may (or may not) drive the plan, measured out of fold on the log."""

    allowed_arms: list[str]
    excluded_arms: dict[str, str]
    policy_value: float  # doubly robust incremental margin of the budgeted uplift policy
    top_k_value: float  # ... of sending the best average arm to the riskiest carts instead
    top_k_arm: str
    budget: float
    passed: bool


def uplift_gate(
    log: pd.DataFrame,
    report: pd.DataFrame,
    baseline: np.ndarray,
    effects: pd.DataFrame,
    risk: np.ndarray,
    catalogue: list[Intervention],
    margin_rate: float,
    budget_share: float = 0.5,
) -> GateEvidence:
    """The uplift model's blocking gate, on out-of-fold predictions for the randomised log.

    An arm may be used only if the lower bound of its Qini interval is above 0. With those arms,
    the budgeted policy (budget: `budget_share` of what treating every cart with a positive
    predicted margin would cost) must beat the top-k-by-risk yardstick at the same budget (the
    arm with the best average realised margin, sent to the riskiest carts); both are valued by
    the doubly robust estimator on the log. Contact caps do not apply to this comparison."""
    allowed = [a for a in report.index if report.loc[a, "qini_lo"] > 0]
    excluded = {
        a: f"Qini 95 % interval [{report.loc[a, 'qini_lo']:.3f}, {report.loc[a, 'qini_hi']:.3f}]"
        " includes 0"
        for a in report.index
        if a not in allowed
    }
    carts = log.reset_index(drop=True).assign(
        blocked="", segment=None, risk=np.asarray(risk), send_at=pd.Timestamp("2000-01-01")
    )
    no_caps = ContactRules(min_hours_between=0.0, max_per_week=len(carts) + 1)
    every = action_table(carts, baseline, effects, catalogue, margin_rate)
    v = carts["cart_value"].to_numpy(dtype=float)
    base_margin = np.clip(baseline, 0, 1) * v * margin_rate
    predicted = pd.DataFrame({CONTROL: base_margin})
    for arm, rows in every.groupby("arm"):
        predicted[arm] = rows["incremental_margin"].to_numpy() + base_margin
    realised = realised_margin(carts, catalogue, margin_rate)
    arm_gain = {
        a: realised[carts["treatment"] == a].mean() - realised[carts["treatment"] == CONTROL].mean()
        for a in every["arm"].unique()
    }
    top_arm = max(arm_gain, key=lambda a: arm_gain[a])
    opts = every[every["arm"].isin(allowed)]
    unlimited = choose_actions(carts, opts, PlanRules(budget=float("inf"), contact=no_caps))
    budget = budget_share * float(unlimited["expected_cost"].sum())
    rules = PlanRules(budget=budget, contact=no_caps)
    plan = choose_actions(carts, opts, rules) if allowed else unlimited
    top_k = top_k_by_risk(carts, every, top_arm, rules)
    value = dr_policy_value(plan["action"].to_numpy(), carts, predicted, realised)
    top_value = dr_policy_value(top_k["action"].to_numpy(), carts, predicted, realised)
    return GateEvidence(
        allowed_arms=allowed,
        excluded_arms=excluded,
        policy_value=value,
        top_k_value=top_value,
        top_k_arm=top_arm,
        budget=budget,
        passed=bool(allowed) and value > top_value,
    )
