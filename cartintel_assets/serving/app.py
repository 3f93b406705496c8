"""`cartintel serve`: the real-time scoring API (FastAPI on uvicorn, 127.0.0.1 by default).

Concurrent requests are scored together (dynamic batching: while one batch is scored, the next
requests queue, and the next batch takes them all), so one feature query and one model call
serve many carts. Each worker has a companion process that appends its decisions to the
warehouse and watches the registry's aliases and the landed days; models reload without a
restart when an alias moves.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from cartintel_assets import settings
from cartintel_assets.models.reasons import explain_all
from cartintel_assets.registry.names import ABANDONMENT_MODEL, CHALLENGER, UPLIFT_MODEL
from cartintel_assets.registry.tracking import Store
from cartintel_assets.serving.auth import require
from cartintel_assets.serving.batching import Batcher
from cartintel_assets.serving.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from cartintel_assets.serving.config import ServiceSettings, serving_plan
from cartintel_assets.serving.consent import merge, withdrawn
from cartintel_assets.serving.decision import (
    Decision,
    Scorer,
    request_columns,
)
from cartintel_assets.serving.housekeeping import housekeeping
from cartintel_assets.serving.ledger import ContactLedger
from cartintel_assets.serving.models import load_models, registry_state
from cartintel_assets.serving.schemas import (
    Intervention,
    ModelUsed,
    RiskReason,
    ScoreRequest,
    ScoreResponse,
)
from cartintel_assets.serving.snapshot import Snapshot
from cartintel_assets.serving.spool import DecisionSpool
from cartintel_assets.warehouse.connection import Warehouse

log = logging.getLogger("cartintel.serve")


class Service:
    """Everything one worker process holds: the scorer, and the companion process that logs its
    decisions and watches the registry and the warehouse (`housekeeping`)."""

    def __init__(self, cfg: ServiceSettings) -> None:
        from cartintel_assets.registry.promotion import PhasePlan
        from cartintel_assets.registry.rollout import RolloutSettings

        self.store = Store(settings.mlflow_tracking_uri())
        self.cfg = cfg
        self.started = time.time()
        # The chores hold the GIL for tens of milliseconds each (opening and checkpointing
        # DuckDB, MLflow's SQLAlchemy queries): in a thread of this process, every request that
        # arrived meanwhile waited for them, and they set the p99. In their own process they
        # cost the worker one pipe write per batch. It starts first, so its imports overlap
        # the worker's own start.
        self._conn, theirs = multiprocessing.Pipe()
        self._send_lock = threading.Lock()
        self._keeper = multiprocessing.get_context("spawn").Process(
            target=housekeeping,
            args=(cfg, self.store.uri, theirs),
            name="cartintel-housekeeping",
            daemon=True,
        )
        self._keeper.start()
        theirs.close()
        try:
            self.reader = Warehouse(cfg.warehouse, lock_timeout_s=60.0).reader
            self.state = registry_state(self.store)
            self.phases: PhasePlan = RolloutSettings().deployed().plan()
            snapshot = Snapshot(self.reader)
            self.scorer = Scorer(
                snapshot,
                load_models(self.store, self.state, cfg.shadow),
                self.phases,
                serving_plan(),
                ContactLedger(cfg.ledger),
                settings.pseudonym_key(),
            )
            if not self._conn.poll(600):
                raise TimeoutError("the housekeeping process did not start within 600 s")
            self._conn.recv()  # ("ready", aliases): the listener acts on later ones
        except BaseException:
            self._keeper.terminate()
            raise
        self.loaded_at = datetime.now(UTC)
        self._reload_lock = threading.Lock()
        self._listener = threading.Thread(target=self._listen, name="housekeeping", daemon=True)
        # every decision is committed here before its response is sent (`serving.spool`); the
        # companion process moves them to the warehouse
        self.spool = DecisionSpool(cfg.spool)
        self.logged = {"written": 0, "pending": 0}
        # consent as landed but not ingested yet: withdrawals count at once (`serving.consent`)
        self.landed_consent: dict[str, tuple[str, bool]] = {}
        self._flushed: dict[int, threading.Event] = {}
        self.batcher: Batcher[ScoreRequest, Decision] = Batcher(
            self._score_batch, cfg.max_batch, cfg.gather_turns
        )
        self.batches, self.scored, self.busy_s = 0, 0, 0.0

    # -- models and snapshot ----------------------------------------------------------------
    def reload(
        self, snapshot: bool = False, state: dict[str, str | None] | None = None
    ) -> dict[str, Any]:
        """Reload the models if an alias moved (`state`: the aliases as just read; None: read
        them now), and the warehouse snapshot if asked."""
        with self._reload_lock:
            changed: dict[str, Any] = {}
            state = registry_state(self.store) if state is None else state
            if state != self.state:
                self.scorer.models = load_models(self.store, state, self.cfg.shadow)
                changed["models"] = {"from": self.state, "to": state}
                self.state, self.loaded_at = state, datetime.now(UTC)
                log.info("models reloaded: %s", state)
            if snapshot:
                fresh = Snapshot(self.reader)
                self._withdraw(fresh)  # what landed since, before it serves
                self.scorer.snapshot = fresh
                changed["snapshot"] = str(self.scorer.snapshot.last_day)
            if changed:
                gc.freeze()  # the new ones too (see start)
            return changed

    def _listen(self) -> None:
        """Act on what the companion process found (a blocking read: no GIL while it waits)."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):  # the companion process is gone
                log.warning("the housekeeping process ended: no more reloads or decision writes")
                return
            if msg is None:
                return
            try:
                if msg[0] == "aliases" and msg[1] != self.state:
                    self.reload(state=msg[1])
                elif msg[0] == "landed" and msg[1] and msg[1] != str(self.scorer.snapshot.last_day):
                    self.reload(snapshot=True)
                elif msg[0] == "consent":
                    merge(self.landed_consent, msg[1])
                    self._withdraw(self.scorer.snapshot)
                elif msg[0] == "logged":
                    self.logged = {"written": msg[2], "pending": msg[3]}
                    if msg[1] in self._flushed:
                        self._flushed[msg[1]].set()
            except Exception as err:  # the service keeps serving what it has
                log.warning("reload failed, still serving %s: %s", self.state, err)

    def _withdraw(self, snapshot: Snapshot) -> None:
        """Customers whose latest landed consent is a withdrawal get none in `snapshot`."""
        for cid in withdrawn(self.landed_consent):
            snapshot.consent[cid] = False

    def flush_decisions(self, timeout_s: float = 60.0) -> dict[str, int]:
        """Move the decisions spooled so far to the warehouse now; what is written and pending
        after."""
        token = len(self._flushed)
        done = self._flushed[token] = threading.Event()
        self._send(("flush", token))
        if not done.wait(timeout_s):
            raise TimeoutError(f"the decision log was not written within {timeout_s:.0f} s")
        return dict(self.logged)

    # -- batching ---------------------------------------------------------------------------
    async def start(self) -> None:
        # the snapshot and the models are millions of long-lived objects: out of the collector's
        # way, so a full collection does not stall a request for tens of milliseconds
        gc.freeze()
        self.batcher.start()
        self._listener.start()

    async def stop(self) -> None:
        self.batcher.stop()
        with contextlib.suppress(OSError):  # unless it is gone already
            self._send(("stop",))
        self._keeper.join(timeout=30)
        self._listener.join(timeout=5)
        self._conn.close()

    def _send(self, msg: tuple[Any, ...]) -> None:
        with self._send_lock:  # the operations endpoints and stop both send
            self._conn.send(msg)

    async def score(self, request: ScoreRequest) -> Decision:
        return await self.batcher.submit(request)

    def _score_batch(self, requests: list[ScoreRequest]) -> list[Decision]:
        started = time.perf_counter()
        carts = [  # the validated fields as they are (no copy per event)
            request_columns(vars(r.session), [vars(e) for e in r.events])  # type: ignore[attr-defined]
            for r in requests
        ]
        decisions = self.scorer.score(carts)
        now = datetime.now(UTC).replace(tzinfo=None)
        self.spool.append([d.log_row(now) for d in decisions])  # before any response is sent
        self.batches += 1
        self.scored += len(requests)
        self.busy_s += time.perf_counter() - started
        return decisions

    # -- views ------------------------------------------------------------------------------
    def models_view(self) -> dict[str, Any]:
        m = self.scorer.models
        return {
            "loaded_at": self.loaded_at.isoformat(),
            "aliases": self.state,
            "risk": {
                a: {"name": r.name, "version": r.version, "run_id": r.run_id}
                for a, r in m.risk.items()
            },
            "uplift": {
                a: {"name": u.name, "version": u.version, "allowed_arms": u.allowed_arms}
                for a, u in m.uplift.items()
            },
            "shadow": {"alias": CHALLENGER, "version": m.shadow.version} if m.shadow else None,
            "pilot_regions": list(self.phases.pilot_regions),
        }


def response(d: Decision) -> ScoreResponse:
    models = [
        ModelUsed(name=ABANDONMENT_MODEL, version=d.risk_model_version, alias=d.risk_model_alias)
    ]
    if d.uplift_model_version:
        models.append(
            ModelUsed(
                name=UPLIFT_MODEL,
                version=d.uplift_model_version,
                alias=d.uplift_model_alias or CHALLENGER,
            )
        )
    return ScoreResponse(
        request_id=d.request_id,
        session_id=d.session_id,
        scored=d.scored,
        risk=d.risk,
        reason_codes=d.reason_codes,
        reasons=[
            RiskReason(code=r.code, text=r.text, kind=r.kind, actionable=r.actionable)
            for r in explain_all(d.reason_codes, d.features)
        ],
        segment=d.segment,
        intervention=Intervention(
            action=d.action,
            intervention_id=d.intervention_id,
            reason=d.reason,
            expected_incremental_margin=d.incremental_margin,
            expected_cost=d.expected_cost,
            in_holdout=d.in_holdout,
            consent=d.consent,
        ),
        models=models,
    )


def create_app(cfg: ServiceSettings | None = None) -> FastAPI:
    """The API, with the service built at startup (models, snapshot) and stopped at shutdown."""
    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(cfg or ServiceSettings.from_env())
        await service.start()
        holder["service"] = service
        app.state.service = service
        yield
        await service.stop()

    app = FastAPI(
        title="cartintel scoring API",
        version="1",
        summary="Risk of harmful cart abandonment, its reasons, the shopper's segment and the"
        " intervention (or none) that pays, for one open cart, in real time.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes if cfg else DEFAULT_MAX_BODY_BYTES)

    def service() -> Service:
        return holder["service"]

    def scope(name: str) -> Any:
        """Depends on a bearer token of scope `name`, when the service has tokens."""
        return Depends(require(name, lambda: service().cfg.tokens))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, able to echo a NaN or an infinity it refused (as text: JSON has no
        such numbers, and the stock handler fails on them with a 500)."""
        detail = jsonable_encoder(
            exc.errors(), custom_encoder={float: lambda v: v if math.isfinite(v) else str(v)}
        )
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.post(
        "/score", response_model=ScoreResponse, tags=["scoring"], dependencies=[scope("score")]
    )
    async def score(request: ScoreRequest) -> ScoreResponse:
        """Score a cart session from its events so far: risk (by the region's phase alias,
        `pilot` or `global`), reason codes, segment and the recommended intervention within
        consent, the holdout, discount and contact caps and the day's budget. Every decision is
        logged to the warehouse table `decision_log`; the `challenger` scores in the shadow."""
        return response(await service().score(request))

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        s = service()
        return {
            "status": "ok",
            "uptime_s": round(time.time() - s.started, 1),
            "snapshot": {
                "last_landed_day": str(s.scorer.snapshot.last_day),
                "sessions": s.scorer.snapshot.sessions,
                "built_in_s": round(s.scorer.snapshot.seconds, 2),
            },
            # as the companion process last reported (after its latest write)
            "decisions_logged": s.logged["written"],
            "decisions_pending": s.logged["pending"],
            "scoring": {
                "requests": s.scored,
                "batches": s.batches,
                "mean_batch": round(s.scored / s.batches, 2) if s.batches else 0,
                "mean_batch_ms": round(1000 * s.busy_s / s.batches, 1) if s.batches else 0,
            },
        }

    @app.get("/models", tags=["operations"], dependencies=[scope("operations")])
    def models() -> dict[str, Any]:
        """The registry versions loaded, per alias, and what the registry says now."""
        return service().models_view()

    @app.post("/reload", tags=["operations"], dependencies=[scope("operations")])
    def reload() -> dict[str, Any]:
        """Reload now: models if an alias moved, and the warehouse snapshot."""
        return {"changed": service().reload(snapshot=True), **service().models_view()}

    @app.get(
        "/dashboard",
        tags=["reporting"],
        response_class=FileResponse,
        dependencies=[scope("reporting")],
    )
    def dashboard() -> FileResponse:
        """The executive dashboard, as last materialised (asset `executive_dashboard`)."""
        from cartintel_assets.reporting.dashboard import page_path

        path = page_path(service().cfg.reports)
        if not path.exists():
            raise HTTPException(
                404, f"no dashboard at {path} yet: materialise the asset executive_dashboard"
            )
        return FileResponse(path, media_type="text/html")

    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for `cartintel serve` (settings from the environment)."""
    return create_app(ServiceSettings.from_env())
