"""Real-time decisions on open carts: the batch pipeline's feature code, risk model, reason codes,
segments, uplift model and plan rules, applied to a request's events. No Dagster, no web code.

`Scorer.score` turns a batch of requests (the web layer batches concurrent requests) into
decisions, reading the reference data from a `Snapshot` (serving/snapshot.py), the models from
`Models` (serving/models.py) and claiming contacts in the `ContactLedger` (serving/ledger.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cartintel_assets.contracts.schema import SESSIONS
from cartintel_assets.decisions.catalogue import NONE, Intervention
from cartintel_assets.decisions.economics import option_columns
from cartintel_assets.decisions.plan import PlanRules, choose, in_holdout
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    FEATURE_TYPES,
    NUMERIC_FEATURES,
    CutoffPolicy,
    compute_features,
    compute_session_facts,
    day_of,
    lookup,
)
from cartintel_assets.ingestion.ingest import pseudonymise
from cartintel_assets.models.abandonment import reason_codes
from cartintel_assets.registry.promotion import PhasePlan
from cartintel_assets.registry.registration import RegisteredUpliftModel
from cartintel_assets.serving.ledger import ContactLedger
from cartintel_assets.serving.models import Models
from cartintel_assets.serving.snapshot import Snapshot

UNSEGMENTED = "unsegmented"

# The decision log, in column order (the warehouse table `decision_log`).
DECISION_COLUMNS: dict[str, str] = {
    "request_id": "VARCHAR",
    "decided_at": "TIMESTAMP",
    "session_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "region": "VARCHAR",
    "cutoff_at": "TIMESTAMP",
    "features_digest": "VARCHAR",
    "risk": "DOUBLE",
    "reason_codes": "VARCHAR[]",
    "segment": "VARCHAR",
    "consent": "BOOLEAN",
    "in_holdout": "BOOLEAN",
    "action": "VARCHAR",
    "intervention_id": "VARCHAR",
    "reason": "VARCHAR",
    "p_baseline": "DOUBLE",
    "incremental_margin": "DOUBLE",
    "expected_cost": "DOUBLE",
    "risk_model_version": "VARCHAR",
    "risk_model_alias": "VARCHAR",
    "uplift_model_version": "VARCHAR",
    "shadow_model_version": "VARCHAR",
    "shadow_risk": "DOUBLE",
}


# ---- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingPlan:
    """The plan's rules as the service applies them to one cart at a time."""

    rules: PlanRules
    catalogue: list[Intervention]
    margin_rate: float
    holdout_share: float
    holdout_salt: str


@dataclass
class Decision:
    """What the service answers for one cart, and what it logs."""

    request_id: str
    session_id: str
    customer_id: str
    region: str
    scored: bool
    features: dict[str, Any] = field(default_factory=dict)
    cutoff_at: datetime | None = None
    risk: float | None = None
    reason_codes: list[str] = field(default_factory=list)
    segment: str = UNSEGMENTED
    consent: bool = False
    in_holdout: bool = False
    action: str = NONE
    intervention_id: str | None = None
    reason: str = ""
    p_baseline: float | None = None
    incremental_margin: float = 0.0
    expected_cost: float = 0.0
    risk_model_version: str | None = None
    risk_model_alias: str | None = None
    uplift_model_version: str | None = None
    uplift_model_alias: str | None = None
    shadow_model_version: str | None = None
    shadow_risk: float | None = None
    features_digest: str = ""

    def log_row(self, decided_at: datetime) -> dict[str, Any]:
        row = {k: getattr(self, k) for k in DECISION_COLUMNS if k != "decided_at"}
        return {**row, "decided_at": decided_at}


def features_digest(row: dict[str, Any]) -> str:
    """A short, stable digest of a feature row (what the decision was based on)."""
    text = "|".join(f"{k}={row[k]!r}" for k in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CartRequest:
    """One request as numpy columns: its session (the shop's customer id, started_at in epoch
    µs) and its events (`features.compute_features`' layout)."""

    session: dict[str, Any]
    events: dict[str, np.ndarray]


class Scorer:
    """Decisions for carts, from a snapshot, loaded models and the plan's rules."""

    def __init__(
        self,
        snapshot: Snapshot,
        models: Models,
        phases: PhasePlan,
        plan: ServingPlan,
        ledger: ContactLedger,
        pseudonym_key: str,
        policy: CutoffPolicy | None = None,
        reasons: int = 3,
    ) -> None:
        self.snapshot, self.models, self.phases, self.plan = snapshot, models, phases, plan
        self.ledger, self.key, self.policy = ledger, pseudonym_key, policy or CutoffPolicy()
        self.reasons = reasons

    def score(self, requests: list[CartRequest]) -> list[Decision]:
        """One decision per request (customer ids as the shop knows them, pseudonymised here).
        The same session twice in a batch (a retry, or its events so far at two moments) is
        scored once per request."""
        rounds: list[tuple[set[str], list[int]]] = []  # each session at most once per round
        for i, r in enumerate(requests):
            sid = str(r.session["session_id"])
            for seen, members in rounds:
                if sid not in seen:
                    seen.add(sid)
                    members.append(i)
                    break
            else:
                rounds.append(({sid}, [i]))
        if len(rounds) == 1:
            return self._score(requests)
        out: dict[int, Decision] = {}
        for _, members in rounds:
            out.update(zip(members, self._score([requests[j] for j in members]), strict=True))
        return [out[i] for i in range(len(requests))]

    def _score(self, requests: list[CartRequest]) -> list[Decision]:
        models, snap = self.models, self.snapshot  # one consistent set for the whole batch
        customers = pseudonymise([str(r.session["customer_id"]) for r in requests], self.key)
        sessions = {
            k: np.array([r.session[k] for r in requests], dtype=object)
            for k in ("session_id", "device", "traffic_source", "region")
        }
        sessions["customer_id"] = np.array(customers, dtype=object)
        sessions["started_at"] = np.array([r.session["started_at"] for r in requests], np.int64)
        events = {k: np.concatenate([r.events[k] for r in requests]) for k in requests[0].events}
        # the batch's feature code, per day of the sessions (one day but around midnight)
        days = day_of(sessions["started_at"])
        parts = []
        for day in sorted(set(days)):
            on = days == day
            parts.append(
                compute_features(
                    {k: v[on] for k, v in sessions.items()},
                    events,
                    snap.reference(day),
                    self.policy,
                )
            )
        feats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        row_of = {sid: i for i, sid in enumerate(feats["session_id"])}
        out = [
            Decision(
                request_id=uuid.uuid4().hex,
                session_id=str(r.session["session_id"]),
                customer_id=c,
                region=str(r.session["region"]),
                scored=str(r.session["session_id"]) in row_of,
                reason=""
                if str(r.session["session_id"]) in row_of
                else "nothing to score: no add-to-cart before the cutoff",
                segment=str(snap.segment.get(c) or UNSEGMENTED),
                consent=bool(snap.consent.get(c, False)),
            )
            for r, c in zip(requests, customers, strict=True)
        ]
        scored = [d for d in out if d.scored]
        if not scored:
            return out
        take = np.array([row_of[d.session_id] for d in scored])
        rows = {k: v[take] for k, v in feats.items()}
        facts = compute_session_facts(events)
        at = lookup({k: i for i, k in enumerate(facts["session_id"])}, rows["session_id"])
        rows.update({k: v[at] for k, v in facts.items() if k != "session_id"})
        available = set(models.risk)
        alias = np.array(
            [self.phases.serving_alias(str(r), available) for r in rows["region"]], dtype=object
        )
        risk = np.zeros(len(scored))
        shadow = np.zeros(len(scored))
        codes: list[list[str]] = [[] for _ in scored]
        derived: dict[str, np.ndarray] = {}  # what the risk model computed itself (segments)
        for a in sorted(set(alias)):
            m = alias == a
            part = {k: v[m] for k, v in rows.items()}
            model = models.risk[a].model
            own = model.derived(part)  # its segment features: for the matrix and the reasons
            for k, v in own.items():
                derived.setdefault(k, np.full(len(scored), np.nan))[m] = v
            x = model.matrix(part, own)  # encoded once for the risk, its reasons and the shadow
            risk[m] = model.predict_proba(part, x)
            for i, c in zip(
                np.flatnonzero(m).tolist(), reason_codes(model, part, self.reasons, x), strict=True
            ):
                codes[i] = c
            if models.shadow is None:
                continue
            if models.shadow.version == models.risk[a].version:
                shadow[m] = risk[m]  # the version served is the challenger: the same prediction
            else:  # rows encoded alike are encoded once
                challenger = models.shadow.model
                shadow[m] = challenger.predict_proba(
                    part, x if challenger.encodes_like(model) else None
                )
        values = {k: feature_values(k, rows[k]) for k in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)}
        values.update({k: feature_values(k, v) for k, v in derived.items()})
        for i, d in enumerate(scored):
            d.features = {k: v[i] for k, v in values.items()}
            d.features_digest = features_digest(d.features)
            d.cutoff_at = _datetime(int(rows["cutoff_at"][i]))
            d.risk, d.reason_codes = float(risk[i]), codes[i]
            d.risk_model_alias = str(alias[i])
            d.risk_model_version = models.risk[d.risk_model_alias].version
            if models.shadow is not None:
                d.shadow_model_version, d.shadow_risk = models.shadow.version, float(shadow[i])
        bought = set(events["session_id"][events["event_type"] == "purchase"].tolist())
        self._act(scored, rows, bought, models)
        return out

    def _act(
        self, scored: list[Decision], rows: dict[str, np.ndarray], bought: set[str], models: Models
    ) -> None:
        """The intervention per cart: the plan's choice within consent, holdout, discount caps,
        contact caps and the day's budget (claimed in the shared ledger)."""
        plan = self.plan
        holdout = in_holdout([d.customer_id for d in scored], plan.holdout_share, plan.holdout_salt)
        for d, h in zip(scored, holdout, strict=True):
            d.in_holdout = bool(h)
        if not models.uplift:
            for d in scored:
                d.reason = "no uplift model holds its alias yet (uplift_training_job)"
            return
        # the policy of each cart's phase, as for the risk: pilot in the pilot regions
        held = set(models.uplift)
        alias = np.array([self.phases.serving_alias(d.region, held) for d in scored], dtype=object)
        for a in sorted(set(alias)):
            m = alias == a
            part = {k: v[m] for k, v in rows.items()}
            group = [d for d, x in zip(scored, m, strict=True) if x]
            self._act_with(models.uplift[a], group, part, bought)

    def _act_with(
        self,
        uplift: RegisteredUpliftModel,
        scored: list[Decision],
        rows: dict[str, np.ndarray],
        bought: set[str],
    ) -> None:
        """`_act` for the carts one uplift version decides (what is left of the day's budget)."""
        plan = self.plan
        usable = [i for i in plan.catalogue if i.arm in uplift.allowed_arms]
        rows = {**rows, "segment": np.array([d.segment for d in scored], dtype=object)}
        baseline, effects = uplift.model.predict(rows)
        options = option_columns(
            rows["cart_value"], rows["shipping_cost"], baseline, effects, usable, plan.margin_rate
        )
        send_at = rows["cutoff_at"].astype("datetime64[us]")
        customers = sorted({d.customer_id for d in scored})
        earlier = {c: list(self.snapshot.contacts.get(c, [])) for c in customers}
        days = sorted(set(day_of(rows["cutoff_at"])))
        budget = max(plan.rules.budget - sum(self.ledger.spent(x) for x in days), 0.0)
        claimed = self.ledger.contacts_of(customers)
        chosen = choose(
            blocked=np.array(
                [
                    "bought in session"
                    if d.session_id in bought
                    else "no marketing consent"
                    if not d.consent
                    else "holdout"
                    if d.in_holdout
                    else ""
                    for d in scored
                ],
                dtype=object,
            ),
            segment=rows["segment"],
            customer=np.array([d.customer_id for d in scored], dtype=object),
            send_at=send_at,
            options=options,
            rules=replace(plan.rules, budget=budget),  # what is left of the day's budget
            contacts={c: sorted({*earlier[c], *claimed.get(c, [])}) for c in customers},
        )
        for i, d in enumerate(scored):
            d.uplift_model_version, d.uplift_model_alias = uplift.version, uplift.alias
            d.p_baseline = float(baseline[i])
            if chosen["action"][i] == NONE:
                d.reason = str(chosen["reason"][i])
                continue
            why = self.ledger.claim(
                d.customer_id,
                pd.Timestamp(send_at[i]),
                float(chosen["expected_cost"][i]),
                d.request_id,
                earlier[d.customer_id],
                plan.rules,
            )
            if why:  # another worker took the budget or contacted the customer meanwhile
                d.reason = why
                continue
            d.action, d.intervention_id = (
                str(chosen["action"][i]),
                str(chosen["intervention_id"][i]),
            )
            d.incremental_margin = float(chosen["incremental_margin"][i])
            d.expected_cost = float(chosen["expected_cost"][i])


def _datetime(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=us)


def feature_values(name: str, column: np.ndarray) -> list[Any]:
    """A feature column as JSON and the decision log hold it: None for missing, whole numbers for
    the integer columns of `session_features`."""
    integer = FEATURE_TYPES.get(name) in ("BIGINT", "INTEGER", "HUGEINT")
    return [
        None
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
        else int(v)
        if integer
        else v
        for v in column.tolist()  # Python scalars
    ]


def json_scalar(value: Any) -> Any:
    """A JSON-ready scalar (None for missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and np.isnan(value):
            return None
    return value


# ---- requests as columns --------------------------------------------------------------------------

SESSION_FIELDS: tuple[str, ...] = tuple(c.name for c in SESSIONS.columns)


def _epoch_us(value: Any) -> int:
    """A timestamp (ISO text or datetime; naive means UTC) in epoch microseconds, UTC."""
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return (t - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def request_columns(session: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> CartRequest:
    """A request (canonical `sessions` and `events` fields) as the columns the features read."""

    def num(k: str) -> np.ndarray:
        return np.array([e.get(k) if e.get(k) is not None else np.nan for e in events], float)

    return CartRequest(
        session={
            **{k: session.get(k) for k in SESSION_FIELDS},
            "started_at": _epoch_us(session["started_at"]),
        },
        events={
            "session_id": np.array([e.get("session_id") for e in events], dtype=object),
            "ts": np.array([_epoch_us(e["ts"]) for e in events], dtype=np.int64),
            "seq": np.array([e.get("seq") or 0 for e in events], dtype=np.int64),
            "event_type": np.array([e.get("event_type") for e in events], dtype=object),
            "product_id": np.array([e.get("product_id") for e in events], dtype=object),
            "price": num("price"),
            "quantity": num("quantity"),
        },
    )
