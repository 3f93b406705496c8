"""The scoring API's request and response bodies. A request is a cart session and its events so
far in the canonical landing schema (`contracts/schema.py`); the event model is generated from that
contract, so the API accepts exactly what ingestion accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from cartintel_assets.contracts.schema import EVENTS, PRODUCT_EVENT_TYPES, SESSIONS, TableSpec

MAX_EVENTS = 500  # a session with more events than this is a bot or a bug, not a shopper
# The plausible times of a live cart's events: from its session's start (less a little clock
# skew) to a day later, never ahead of the service's clock, and no session before 2000
CLOCK_SKEW = timedelta(minutes=5)
MAX_SESSION_SPAN = timedelta(hours=24)
EARLIEST = datetime(2000, 1, 1)
_PY = {"VARCHAR": str, "INTEGER": int, "DOUBLE": float, "TIMESTAMP": datetime, "BOOLEAN": bool}
# JSON's NaN and Infinity (and 1e999) parse as floats; ingestion quarantines them, so do we
_STRICT = ConfigDict(extra="forbid", str_max_length=256, allow_inf_nan=False)


def _model(spec: TableSpec, name: str, doc: str, base: type[BaseModel]) -> Any:
    """A pydantic model of one canonical table: types, required fields, allowed values, bounds."""
    fields: dict[str, Any] = {}
    for c in spec.columns:
        kind: Any = Literal[c.allowed] if c.allowed else _PY[c.sql_type]  # type: ignore[valid-type]
        if not c.required:
            kind = kind | None
        bounds = {"ge": c.min_value, "le": c.max_value}
        extra: dict[str, Any] = {k: v for k, v in bounds.items() if v is not None}
        if c.sql_type in ("INTEGER", "DOUBLE", "BOOLEAN"):
            # no coercion: `true` is no price, "3" no quantity and 1 no flag (a number may
            # still be written without a fraction)
            extra["strict"] = True
        if c.sql_type == "VARCHAR" and c.required:
            extra["min_length"] = 1
        fields[c.name] = (
            kind,
            Field(... if c.required else None, description=c.description, **extra),  # type: ignore[call-overload]
        )
    return create_model(name, __base__=base, __doc__=doc, **fields)


class _Event(BaseModel):
    model_config = _STRICT

    @model_validator(mode="after")
    def _product_named(self) -> Any:
        if self.event_type in PRODUCT_EVENT_TYPES and not self.product_id:  # type: ignore[attr-defined]
            raise ValueError(f"a {self.event_type} event must name its product_id")  # type: ignore[attr-defined]
        return self


class _Session(BaseModel):
    model_config = _STRICT


CartEvent = _model(
    EVENTS, "CartEvent", "One event of the session (canonical `events` schema).", _Event
)
CartSession = _model(
    SESSIONS,
    "CartSession",
    "The session (canonical `sessions` schema); `customer_id` is the shop's own id, pseudonymised"
    " by the service exactly as ingestion does.",
    _Session,
)


class ScoreRequest(BaseModel):
    """A cart session and its events so far."""

    model_config = ConfigDict(extra="forbid")
    session: CartSession  # type: ignore[valid-type]
    events: list[CartEvent] = Field(  # type: ignore[valid-type]
        ..., min_length=1, max_length=MAX_EVENTS, description=f"1 to {MAX_EVENTS} events."
    )

    @model_validator(mode="after")
    def _one_session(self) -> ScoreRequest:
        sid = self.session.session_id  # type: ignore[attr-defined]
        other = {e.session_id for e in self.events} - {sid}  # type: ignore[attr-defined]
        if other:
            raise ValueError(f"every event must belong to session {sid!r}; got {sorted(other)}")
        ids = [e.event_id for e in self.events]  # type: ignore[attr-defined]
        if len(set(ids)) != len(ids):
            raise ValueError("event_id values must be unique within a request")
        return self

    @model_validator(mode="after")
    def _in_order_and_in_time(self) -> ScoreRequest:
        """The events in session order (`seq` rising, times not going back), within their
        session's plausible window."""
        events: list[Any] = self.events
        for before, after in zip(events, events[1:], strict=False):
            if after.seq <= before.seq:
                raise ValueError(
                    f"seq must rise from one event to the next: {after.event_id!r} has seq"
                    f" {after.seq} after {before.seq} (duplicate or out of order)"
                )
            if _utc(after.ts) < _utc(before.ts):
                raise ValueError(
                    f"event times must not go back with seq: {after.event_id!r} at {after.ts}"
                    f" follows {before.ts}"
                )
        started = _utc(self.session.started_at)  # type: ignore[attr-defined]
        now = datetime.now(UTC).replace(tzinfo=None)
        if not EARLIEST <= started <= now + CLOCK_SKEW:
            raise ValueError(
                f"session started_at {started} is not plausible: between {EARLIEST} and now"
                f" ({now:%Y-%m-%d %H:%M} UTC)"
            )
        low, high = started - CLOCK_SKEW, min(started + MAX_SESSION_SPAN, now + CLOCK_SKEW)
        for e in events:
            if not low <= _utc(e.ts) <= high:
                raise ValueError(
                    f"event {e.event_id!r} at {e.ts} is outside its session's plausible"
                    f" window {low} .. {high} (the session's start to a day later, not ahead of"
                    " the service's clock)"
                )
        return self


def _utc(t: datetime) -> datetime:
    """A naive UTC time (the contract's times are UTC; an offset, if given, is applied)."""
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


class ModelUsed(BaseModel):
    name: str
    version: str | None
    alias: str | None


class Intervention(BaseModel):
    action: str = Field(description="The recommended arm, or `none`.")
    intervention_id: str | None = Field(description="Catalogue entry to send, if any.")
    reason: str = Field(description="Why no intervention (empty when one is recommended).")
    expected_incremental_margin: float
    expected_cost: float
    in_holdout: bool = Field(description="The customer is in the persistent holdout.")
    consent: bool = Field(description="The customer's latest marketing consent on record.")


class RiskReason(BaseModel):
    code: str = Field(description="The model feature (as in `reason_codes`).")
    text: str = Field(description="What it says of this cart, as a merchant would put it.")
    kind: str = Field(description="price | shipping | delivery | reviews | behaviour.")
    actionable: bool = Field(
        description="A friction the shop can change (price, shipping, delivery, reviews), not"
        " plain behaviour."
    )


class ScoreResponse(BaseModel):
    request_id: str
    session_id: str
    scored: bool = Field(description="False when the session has no cart to score yet.")
    risk: float | None = Field(description="Probability of harmful abandonment (calibrated).")
    reason_codes: list[str] = Field(description="Features raising this cart's risk most (SHAP).")
    reasons: list[RiskReason] = Field(
        default=[], description="The same reasons in words, each marked actionable or not."
    )
    segment: str
    intervention: Intervention
    models: list[ModelUsed]
