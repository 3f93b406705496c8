"""Real-time scoring of one open cart: the batch pipeline's feature SQL, risk model, reason codes,
segments, uplift model and plan rules, applied to a request's events. No Dagster, no web code.

- `Snapshot`: an in-memory DuckDB copy of the reference data the feature SQL reads (prices,
  shipping quotes, reviews, customer history summarised by the same SQL as batch), plus consent,
  segments and earlier contacts. It is copied from the warehouse under the warehouse's shared
  lock and then never touches the file again, so the service never blocks a Dagster run.
- `Models`: the risk versions each serving alias points at, the `challenger` for shadow scoring
  and the uplift version the plan uses, resolved once and swapped whole when an alias moves.
- `ContactLedger`: a small SQLite file shared by the service's worker processes, where each
  recommended contact is claimed atomically against the contact caps and the day's budget.
- `Scorer.score`: a batch of requests (the web layer batches concurrent requests) to decisions.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.ml.abandonment import reason_codes
from cartintel_assets.ml.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SESSION_SUMMARY_SQL,
    CutoffPolicy,
    session_features,
)
from cartintel_assets.ml.ingest import pseudonymise
from cartintel_assets.ml.model_registry import (
    RegisteredRiskModel,
    RegisteredUpliftModel,
    load_risk_model,
    load_uplift_model,
    version_by_alias,
)
from cartintel_assets.ml.policy import (
    NONE,
    Intervention,
    PlanRules,
    action_table,
    choose_actions,
    in_holdout,
)
from cartintel_assets.ml.promotion import PHASES, PhasePlan
from cartintel_assets.ml.schema import EVENTS, SESSIONS
from cartintel_assets.ml.uplift import session_facts

RISK_MODEL = "cartintel-abandonment"
UPLIFT_MODEL = "cartintel-uplift"
SHADOW_ALIAS = "challenger"
UNSEGMENTED = "unsegmented"
HISTORY_TABLE = "session_history"

Reader = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

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


# ---- reference data ------------------------------------------------------------------------------

_CONSENT_SQL = """
SELECT customer_id, arg_max(marketing_consent, partition_date) AS consent
FROM raw_customers GROUP BY customer_id
"""
# contacts that count towards the caps, as the daily plan counts them, plus the service's own
_CONTACTS = {
    "raw_interventions": "SELECT customer_id, assigned_at AS sent_at FROM raw_interventions"
    " WHERE treatment <> 'control'",
    "intervention_plan": "SELECT customer_id, send_at AS sent_at FROM intervention_plan"
    " WHERE action <> 'none'",
}


class Snapshot:
    """The reference data of the feature SQL, consent, segments and contacts, in memory."""

    def __init__(self, reader: Reader, history_days: int = 365) -> None:
        from cartintel_assets.ml.warehouse import has_table

        started = time.monotonic()
        self.con = duckdb.connect(":memory:", config={"threads": 1})
        with reader() as wh:
            last = wh.execute("SELECT max(partition_date) FROM raw_sessions").fetchall()[0]
            if last[0] is None:
                raise LookupError("the warehouse has no landed sessions yet: ingest a day first")
            self.last_day: date = last[0]
            self.first_day = self.last_day - timedelta(days=history_days)
            window = {"first": self.first_day, "last": self.last_day}

            def copy(table: str, sql: str, params: dict[str, Any] | None = None) -> None:
                frame = wh.sql(sql, params=params or {}).to_arrow_table()  # noqa: F841 (read by SQL)
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")

            copy(
                "raw_products",
                "SELECT * FROM raw_products WHERE partition_date >= $first - 31",
                {"first": self.first_day},
            )
            copy("raw_shipping_quotes", "SELECT * FROM raw_shipping_quotes")
            copy(
                "raw_reviews", "SELECT product_id, ts, rating FROM raw_reviews ORDER BY product_id"
            )
            copy(
                HISTORY_TABLE,
                f"{SESSION_SUMMARY_SQL} ORDER BY customer_id",
                {"history_from": self.first_day, "history_to": self.last_day},
            )
            copy("consent", _CONSENT_SQL)
            segments = (
                "SELECT customer_id, segment_name FROM customer_segments"
                if has_table(wh, "customer_segments")
                else "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS segment_name LIMIT 0"
            )
            copy("segments", segments)
            parts = [sql for table, sql in _CONTACTS.items() if has_table(wh, table)]
            if has_table(wh, "decision_log"):
                parts.append(
                    # the service's own recommendations, at the moment they were for
                    "SELECT customer_id, cutoff_at AS sent_at FROM decision_log"
                    " WHERE action <> 'none'"
                )
            copy("contacts", " UNION ALL ".join(parts) if parts else "SELECT NULL LIMIT 0")
            self.sessions = int(
                wh.execute(
                    "SELECT count(*) FROM raw_sessions WHERE partition_date BETWEEN $first AND $last",
                    window,
                ).fetchall()[0][0]
            )
        self.consent = dict(self.con.execute("SELECT * FROM consent").fetchall())
        self.segment = dict(self.con.execute("SELECT * FROM segments").fetchall())
        self.contacts: dict[str, list[pd.Timestamp]] = {}
        if self.con.execute("SELECT count(*) FROM contacts").fetchall()[0][0]:
            for cid, at in self.con.execute("SELECT * FROM contacts").fetchall():
                self.contacts.setdefault(str(cid), []).append(pd.Timestamp(at))
        self._days: set[date] = set()
        self._lock = threading.Lock()
        self.seconds = time.monotonic() - started

    def ensure_day(self, day: date) -> None:
        """Prices and shipping quotes of a day that has not landed yet are those of the latest
        landed day (the catalogue and carrier rates in force), copied once under the new date."""
        if day <= self.last_day or day in self._days:
            return
        with self._lock:
            if day in self._days:
                return
            for table in ("raw_products", "raw_shipping_quotes"):
                cols = [
                    r[0]
                    for r in self.con.execute(f"DESCRIBE {table}").fetchall()
                    if r[0] != "partition_date"
                ]
                self.con.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}, partition_date)"
                    f" SELECT {', '.join(cols)}, $day FROM {table} WHERE partition_date = $last",
                    {"day": day, "last": self.last_day},
                )
            self._days.add(day)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()


# ---- models --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Models:
    """The registry versions one decision uses, resolved together."""

    risk: dict[str, RegisteredRiskModel]  # by alias
    uplift: RegisteredUpliftModel | None
    shadow: RegisteredRiskModel | None


def registry_state(uplift_alias: str = "challenger") -> dict[str, str | None]:
    """Which version each alias the service reads points at now (None: no such alias)."""
    state = {f"{RISK_MODEL}@{a}": version_by_alias(RISK_MODEL, a) for a in PHASES}
    state[f"{UPLIFT_MODEL}@{uplift_alias}"] = version_by_alias(UPLIFT_MODEL, uplift_alias)
    return state


def load_models(
    state: dict[str, str | None], shadow: bool, uplift_alias: str = "challenger"
) -> Models:
    """Load the risk versions of every alias in `state` and the uplift version the plan uses."""
    risk = {a: load_risk_model(RISK_MODEL, a) for a in PHASES if state.get(f"{RISK_MODEL}@{a}")}
    if not risk:
        raise LookupError(
            f"no version of {RISK_MODEL} holds an alias yet: train one (abandonment_training_job)"
        )
    for m in risk.values():  # one thread per model: the service runs one worker per core
        m.model.booster.set_param({"nthread": 1})
    uplift = (
        load_uplift_model(UPLIFT_MODEL, uplift_alias)
        if state.get(f"{UPLIFT_MODEL}@{uplift_alias}")
        else None
    )
    if uplift is not None:
        for part in [*uplift.model.outcome.values(), *sum(uplift.model.effect.values(), ())]:
            part.booster.set_param({"nthread": 1})
    return Models(risk, uplift, risk.get(SHADOW_ALIAS) if shadow else None)


# ---- the contact ledger --------------------------------------------------------------------------


class ContactLedger:
    """Contacts the service recommended, shared by its worker processes (SQLite, WAL): a claim
    checks the caps against earlier contacts and the day's budget, and records the contact, in
    one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS contacts (customer_id TEXT NOT NULL, sent_at TEXT NOT"
                " NULL, day TEXT NOT NULL, expected_cost REAL NOT NULL, request_id TEXT NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS contacts_customer ON contacts (customer_id)")
            db.execute("CREATE INDEX IF NOT EXISTS contacts_day ON contacts (day)")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    def spent(self, day: date) -> float:
        with self._db() as db:
            row = db.execute(
                "SELECT coalesce(sum(expected_cost), 0) FROM contacts WHERE day = ?",
                [day.isoformat()],
            ).fetchone()
        return float(row[0])

    def contacts_of(self, customers: list[str]) -> dict[str, list[pd.Timestamp]]:
        out: dict[str, list[pd.Timestamp]] = {}
        if not customers:
            return out
        with self._db() as db:
            marks = ",".join("?" * len(customers))
            for cid, at in db.execute(
                f"SELECT customer_id, sent_at FROM contacts WHERE customer_id IN ({marks})",
                customers,
            ):
                out.setdefault(cid, []).append(pd.Timestamp(at))
        return out

    def claim(
        self,
        customer: str,
        at: pd.Timestamp,
        cost: float,
        request_id: str,
        earlier: list[pd.Timestamp],
        rules: PlanRules,
    ) -> str | None:
        """Record a contact unless it breaks a cap or the day's budget; the reason if it does."""
        day = at.date().isoformat()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                spent = db.execute(
                    "SELECT coalesce(sum(expected_cost), 0) FROM contacts WHERE day = ?", [day]
                ).fetchone()[0]
                if spent + cost > rules.budget + 1e-9:
                    db.execute("ROLLBACK")
                    return "budget exhausted"
                mine = [
                    pd.Timestamp(r[0])
                    for r in db.execute(
                        "SELECT sent_at FROM contacts WHERE customer_id = ?", [customer]
                    )
                ]
                # the same contact may be known twice (ledger, and the logged decision)
                why = rules.contact.violation(sorted({*earlier, *mine}), at)
                if why:
                    db.execute("ROLLBACK")
                    return why
                db.execute(
                    "INSERT INTO contacts VALUES (?, ?, ?, ?, ?)",
                    [customer, at.isoformat(), day, cost, request_id],
                )
                db.execute("COMMIT")
                return None
            except BaseException:
                db.execute("ROLLBACK")
                raise


# ---- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSettings:
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


class Scorer:
    """Decisions for carts, from a snapshot, loaded models and the plan's rules."""

    def __init__(
        self,
        snapshot: Snapshot,
        models: Models,
        phases: PhasePlan,
        plan: PlanSettings,
        ledger: ContactLedger,
        pseudonym_key: str,
        policy: CutoffPolicy | None = None,
        history_days: int = 365,
        reasons: int = 3,
    ) -> None:
        self.snapshot, self.models, self.phases, self.plan = snapshot, models, phases, plan
        self.ledger, self.key, self.policy = ledger, pseudonym_key, policy or CutoffPolicy()
        self.history_days, self.reasons = history_days, reasons
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "snapshot", None) is not self.snapshot:
            cur = self.snapshot.cursor()
            self._local.cursor, self._local.snapshot = cur, self.snapshot
        return cur

    def features(self, sessions: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
        """Point-in-time feature rows of the requests' carts (the batch SQL, unchanged)."""
        cur = self._cursor()
        cur.register("_req_events", events)
        try:
            parts = []
            for day, day_sessions in sessions.groupby("partition_date"):
                self.snapshot.ensure_day(day)
                cur.register("_req_sessions", day_sessions)
                parts.append(
                    session_features(
                        cur,
                        "_req_events",
                        "_req_sessions",
                        self.policy,
                        day - timedelta(days=self.history_days),
                        day,
                        into="_req_features",
                        history=HISTORY_TABLE,
                    )
                )
                cur.unregister("_req_sessions")
            facts = session_facts(cur, events="_req_events")
        finally:
            cur.unregister("_req_events")
        return pd.concat(parts, ignore_index=True).merge(facts, on="session_id", how="left")

    def score(self, requests: list[tuple[pd.DataFrame, pd.DataFrame]]) -> list[Decision]:
        """One decision per request (its session row and its events, in the canonical schema;
        customer ids as the shop knows them, pseudonymised here). The same session twice in a
        batch (a retry, or its events so far at two moments) is scored once per request."""
        rounds: list[tuple[set[str], list[int]]] = []  # each session at most once per round
        for i, (s, _) in enumerate(requests):
            sid = str(s["session_id"].iloc[0])
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

    def _score(self, requests: list[tuple[pd.DataFrame, pd.DataFrame]]) -> list[Decision]:
        models = self.models  # one consistent set for the whole batch
        sessions = pd.concat([s for s, _ in requests], ignore_index=True)
        events = pd.concat([e for _, e in requests], ignore_index=True)
        sessions["customer_id"] = pseudonymise(
            sessions["customer_id"].astype(str).tolist(), self.key
        )
        sessions["partition_date"] = pd.to_datetime(sessions["started_at"]).dt.date
        feats = self.features(sessions, events).set_index("session_id", drop=False)
        available = set(models.risk)
        out = []
        for s in sessions.itertuples(index=False):
            out.append(
                Decision(
                    request_id=uuid.uuid4().hex,
                    session_id=str(s.session_id),
                    customer_id=str(s.customer_id),
                    region=str(s.region),
                    scored=s.session_id in feats.index,
                    reason=""
                    if s.session_id in feats.index
                    else "nothing to score: no add-to-cart before the cutoff",
                    segment=str(self.snapshot.segment.get(s.customer_id) or UNSEGMENTED),
                    consent=bool(self.snapshot.consent.get(s.customer_id, False)),
                )
            )
        scored = [d for d in out if d.scored]
        if not scored:
            return out
        rows = feats.loc[[d.session_id for d in scored]].reset_index(drop=True)
        alias = rows["region"].map(lambda r: self.phases.serving_alias(str(r), available))
        risk = np.zeros(len(rows))
        codes: list[list[str]] = [[] for _ in range(len(rows))]
        for a in sorted(set(alias)):
            m = (alias == a).to_numpy()
            part = rows[m]
            risk[m] = models.risk[a].model.predict_proba(part)
            for i, c in zip(
                np.flatnonzero(m).tolist(),
                reason_codes(models.risk[a].model, part, self.reasons),
                strict=True,
            ):
                codes[i] = c
        shadow = models.shadow.model.predict_proba(rows) if models.shadow else None
        for i, d in enumerate(scored):
            row = rows.iloc[i]
            d.features = {
                k: json_scalar(row[k]) for k in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
            }
            d.features_digest = features_digest(d.features)
            d.cutoff_at = pd.Timestamp(row["cutoff_at"]).to_pydatetime()
            d.risk, d.reason_codes = float(risk[i]), codes[i]
            d.risk_model_alias = str(alias.iloc[i])
            d.risk_model_version = models.risk[d.risk_model_alias].version
            if models.shadow is not None and shadow is not None:
                d.shadow_model_version, d.shadow_risk = models.shadow.version, float(shadow[i])
        self._act(scored, rows, events, models)
        return out

    def _act(
        self, scored: list[Decision], rows: pd.DataFrame, events: pd.DataFrame, models: Models
    ) -> None:
        """The intervention per cart: the plan's choice within consent, holdout, discount caps,
        contact caps and the day's budget (claimed in the shared ledger)."""
        plan = self.plan
        bought = set(events.loc[events["event_type"] == "purchase", "session_id"])
        holdout = in_holdout(
            pd.Series([d.customer_id for d in scored]), plan.holdout_share, plan.holdout_salt
        )
        for d, h in zip(scored, holdout, strict=True):
            d.in_holdout = bool(h)
        if models.uplift is None:
            for d in scored:
                d.reason = "no uplift model holds its alias yet (uplift_training_job)"
            return
        d_uplift = models.uplift
        usable = [i for i in plan.catalogue if i.arm in d_uplift.allowed_arms]
        carts = rows.assign(
            segment=[d.segment for d in scored],
            send_at=pd.to_datetime(rows["cutoff_at"]),
            blocked=[
                "bought in session"
                if d.session_id in bought
                else "no marketing consent"
                if not d.consent
                else "holdout"
                if d.in_holdout
                else ""
                for d in scored
            ],
        )
        baseline = d_uplift.model.baseline(carts)
        options = action_table(
            carts, baseline, d_uplift.model.effects(carts), usable, plan.margin_rate
        )
        customers = sorted({d.customer_id for d in scored})
        earlier = {c: list(self.snapshot.contacts.get(c, [])) for c in customers}
        days = sorted(set(carts["send_at"].dt.date))
        budget = max(plan.rules.budget - sum(self.ledger.spent(x) for x in days), 0.0)
        rules = replace(plan.rules, budget=budget)  # what is left of the day's budget
        claimed = self.ledger.contacts_of(customers)
        history = pd.DataFrame(
            [(c, t) for c in customers for t in sorted({*earlier[c], *claimed.get(c, [])})],
            columns=["customer_id", "sent_at"],
        )
        chosen = choose_actions(carts, options, rules, history)
        for i, d in enumerate(scored):
            d.uplift_model_version = d_uplift.version
            d.p_baseline = float(baseline[i])
            c = chosen.iloc[i]
            if c["action"] == NONE:
                d.reason = str(c["reason"])
                continue
            why = self.ledger.claim(
                d.customer_id,
                pd.Timestamp(carts["send_at"].iloc[i]),
                float(c["expected_cost"]),
                d.request_id,
                earlier[d.customer_id],
                plan.rules,
            )
            if why:  # another worker took the budget or contacted the customer meanwhile
                d.reason = why
                continue
            d.action, d.intervention_id = str(c["action"]), str(c["intervention_id"])
            d.incremental_margin = float(c["incremental_margin"])
            d.expected_cost = float(c["expected_cost"])


def json_scalar(value: Any) -> Any:
    """A JSON-ready scalar (None for missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and np.isnan(value):
            return None
    return value


# ---- request frames ------------------------------------------------------------------------------

SESSION_FIELDS: tuple[str, ...] = tuple(c.name for c in SESSIONS.columns)
EVENT_FIELDS: tuple[str, ...] = tuple(c.name for c in EVENTS.columns)


def request_frames(
    session: dict[str, Any], events: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A request as the two canonical tables the feature SQL reads (sessions, events)."""
    s = pd.DataFrame([{k: session.get(k) for k in SESSION_FIELDS}])
    s["started_at"] = pd.to_datetime(s["started_at"], utc=True, format="ISO8601").dt.tz_localize(
        None
    )
    e = pd.DataFrame(
        [{k: ev.get(k) for k in EVENT_FIELDS} for ev in events], columns=list(EVENT_FIELDS)
    )
    e["ts"] = pd.to_datetime(e["ts"], utc=True, format="ISO8601").dt.tz_localize(None)
    for col, kind in (("quantity", "Int64"), ("delivery_days", "Int64"), ("seq", "Int64")):
        e[col] = e[col].astype(kind)
    for col in ("price", "shipping_cost", "order_value"):
        e[col] = e[col].astype(float)
    for col in ("product_id", "coupon_code"):
        e[col] = e[col].astype(object)
    e["partition_date"] = s["started_at"].dt.date.iloc[0]
    return s, e
