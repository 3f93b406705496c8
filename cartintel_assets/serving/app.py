"""`cartintel serve`: the real-time scoring API (FastAPI on uvicorn, 127.0.0.1 by default).

Concurrent requests are scored together (dynamic batching: while one batch is scored, the next
requests queue, and the next batch takes them all), so one feature query and one model call
serve many carts. Decisions are logged to the warehouse in the background; registry aliases
are watched, and models reload without a restart when one moves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from cartintel_assets import settings
from cartintel_assets.ml.serving import (
    DECISION_COLUMNS,
    RISK_MODEL,
    UPLIFT_MODEL,
    ContactLedger,
    Decision,
    PlanSettings,
    Scorer,
    Snapshot,
    load_models,
    registry_state,
    request_columns,
)
from cartintel_assets.serving.schemas import (
    Intervention,
    ModelUsed,
    ScoreRequest,
    ScoreResponse,
)

log = logging.getLogger("cartintel.serve")


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service reads and writes, and how often it looks for changes."""

    warehouse: Path = field(default_factory=settings.warehouse_path)
    ledger: Path = field(
        default_factory=lambda: settings.warehouse_path().parent / "serving" / "contacts.sqlite"
    )
    reports: Path = field(default_factory=settings.reports_dir)
    shadow: bool = True
    reload_interval_s: float = 5.0
    snapshot_refresh_s: float = 300.0
    # a flush opens the warehouse (~50 ms on 2 cores) and holds the GIL part of it: every 5 s
    # it delays few enough requests to stay out of the p99
    flush_interval_s: float = 5.0
    max_batch: int = 64
    gather_turns: int = 8  # event-loop turns that let arrived requests join a batch

    @classmethod
    def from_env(cls) -> ServiceSettings:
        env = os.environ.get
        return cls(
            shadow=env("CARTINTEL_SERVE_SHADOW", "1") != "0",
            reload_interval_s=float(env("CARTINTEL_SERVE_RELOAD_S", "5")),
            snapshot_refresh_s=float(env("CARTINTEL_SERVE_SNAPSHOT_S", "300")),
            flush_interval_s=float(env("CARTINTEL_SERVE_FLUSH_S", "5")),
        )


def plan_settings() -> PlanSettings:
    """The daily plan's rules and the rollout's holdout, from their one definition each."""
    from cartintel_assets.defs.uplift.assets import InterventionPlanConfig
    from cartintel_assets.ml.policy import load_catalogue
    from cartintel_assets.resources.rollout import RolloutResource

    c = InterventionPlanConfig()
    return PlanSettings(
        rules=c.rules(),
        catalogue=load_catalogue(c.catalogue_path),
        margin_rate=c.margin_rate,
        holdout_share=RolloutResource().holdout_share,
        holdout_salt=c.holdout_salt,
    )


class DecisionWriter:
    """Appends decisions to the warehouse table `decision_log` in the background. A flush waits
    briefly for the warehouse lock; if a run holds it, the rows stay queued for the next try."""

    def __init__(self, warehouse: Path, interval_s: float) -> None:
        from cartintel_assets.resources.warehouse import WarehouseResource

        self.warehouse = WarehouseResource(database=str(warehouse), lock_timeout_s=2.0)
        self.interval_s = interval_s
        self.pending: list[dict[str, Any]] = []
        self.written = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.pending.extend(rows)

    def flush(self) -> int:
        """Write what is queued; return how many rows were written."""
        from cartintel_assets.ml.warehouse import typed_temp_table

        with self._lock:
            rows, self.pending = self.pending, []
        if not rows:
            return 0
        try:
            with self.warehouse.get_connection() as con:
                cols = ", ".join(f'"{c}" {t}' for c, t in DECISION_COLUMNS.items())
                con.execute(f"CREATE TABLE IF NOT EXISTS decision_log ({cols})")
                typed_temp_table(con, pd.DataFrame(rows), DECISION_COLUMNS, "_decisions")
                con.execute("INSERT INTO decision_log SELECT * FROM _decisions")
        except Exception as err:  # keep them: nothing is lost while a run holds the warehouse
            with self._lock:
                self.pending[:0] = rows
            log.warning("decision log: %d rows wait for the warehouse (%s)", len(rows), err)
            return 0
        self.written += len(rows)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()


class Service:
    """Everything one worker process holds: the scorer, the decision log and the watchers."""

    def __init__(self, cfg: ServiceSettings) -> None:
        import mlflow

        from cartintel_assets.ml.promotion import PhasePlan
        from cartintel_assets.resources.rollout import RolloutResource
        from cartintel_assets.resources.warehouse import WarehouseResource

        mlflow.set_tracking_uri(settings.mlflow_tracking_uri())
        self.cfg = cfg
        self.started = time.time()
        self.reader = WarehouseResource(database=str(cfg.warehouse), lock_timeout_s=60.0).reader
        self.state = registry_state()
        self.phases: PhasePlan = RolloutResource().plan()
        snapshot = Snapshot(self.reader)
        self.scorer = Scorer(
            snapshot,
            load_models(self.state, cfg.shadow),
            self.phases,
            plan_settings(),
            ContactLedger(cfg.ledger),
            settings.pseudonym_key(),
        )
        self.loaded_at = datetime.now(UTC)
        self.writer = DecisionWriter(cfg.warehouse, cfg.flush_interval_s)
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="registry-watcher", daemon=True)
        self._queue: asyncio.Queue[tuple[ScoreRequest, asyncio.Future[Decision]]] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.batches, self.scored, self.busy_s = 0, 0, 0.0

    # -- models and snapshot ----------------------------------------------------------------
    def reload(self, snapshot: bool = False) -> dict[str, Any]:
        """Reload the models if an alias moved, and the warehouse snapshot if asked."""
        with self._reload_lock:
            changed: dict[str, Any] = {}
            state = registry_state()
            if state != self.state:
                self.scorer.models = load_models(state, self.cfg.shadow)
                changed["models"] = {"from": self.state, "to": state}
                self.state, self.loaded_at = state, datetime.now(UTC)
                log.info("models reloaded: %s", state)
            if snapshot:
                self.scorer.snapshot = Snapshot(self.reader)
                changed["snapshot"] = str(self.scorer.snapshot.last_day)
            if changed:
                gc.freeze()  # the new ones too (see start)
            return changed

    def _landed_since(self) -> bool:
        """Whether a day landed after the snapshot's latest one."""
        with self.reader() as wh:
            last = wh.execute("SELECT max(partition_date) FROM raw_sessions").fetchall()[0]
        return bool(last and last[0] and last[0] != self.scorer.snapshot.last_day)

    def _watch(self) -> None:
        checked = time.monotonic()
        while not self._stop.wait(self.cfg.reload_interval_s):
            try:
                due = time.monotonic() - checked >= self.cfg.snapshot_refresh_s
                if due:
                    checked = time.monotonic()
                self.reload(snapshot=due and self._landed_since())
            except Exception as err:  # the service keeps serving what it has
                log.warning("reload failed, still serving %s: %s", self.state, err)

    # -- batching ---------------------------------------------------------------------------
    async def start(self) -> None:
        # the snapshot and the models are millions of long-lived objects: out of the collector's
        # way, so a full collection does not stall a request for tens of milliseconds
        gc.freeze()
        self._queue = asyncio.Queue()
        self._batcher = asyncio.create_task(self._batch_loop())
        self.writer.start()
        self._watcher.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._batcher:
            self._batcher.cancel()
        self.writer.stop()

    async def score(self, request: ScoreRequest) -> Decision:
        assert self._queue is not None, "the service has not started"
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _batch_loop(self) -> None:
        """Score what is queued as one batch, in the event loop itself: the work is CPU-bound
        and holds the GIL, so a scoring thread would only fight the loop for it (measured:
        ~35 % less throughput at concurrency 16). Before each batch the loop turns a few times
        so requests already on the sockets join it; while a batch is scored, new requests wait
        in the socket buffers and make up the next one."""
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            for _ in range(self.cfg.gather_turns):
                await asyncio.sleep(0)
            while not self._queue.empty() and len(batch) < self.cfg.max_batch:
                batch.append(self._queue.get_nowait())
            try:
                decisions = self._score_batch([r for r, _ in batch])
            except Exception as err:
                log.exception("scoring failed for a batch of %d", len(batch))
                for _, f in batch:
                    if not f.done():
                        f.set_exception(err)
                continue
            for (_, f), d in zip(batch, decisions, strict=True):
                if not f.done():
                    f.set_result(d)

    def _score_batch(self, requests: list[ScoreRequest]) -> list[Decision]:
        started = time.perf_counter()
        carts = [  # the validated fields as they are (no copy per event)
            request_columns(vars(r.session), [vars(e) for e in r.events])  # type: ignore[attr-defined]
            for r in requests
        ]
        decisions = self.scorer.score(carts)
        now = datetime.now(UTC).replace(tzinfo=None)
        self.writer.add([d.log_row(now) for d in decisions])
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
                "name": m.uplift.name,
                "alias": m.uplift.alias,
                "version": m.uplift.version,
                "allowed_arms": m.uplift.allowed_arms,
            }
            if m.uplift
            else None,
            "shadow": {"alias": "challenger", "version": m.shadow.version} if m.shadow else None,
            "pilot_regions": list(self.phases.pilot_regions),
        }


def response(d: Decision) -> ScoreResponse:
    models = [ModelUsed(name=RISK_MODEL, version=d.risk_model_version, alias=d.risk_model_alias)]
    if d.uplift_model_version:
        models.append(
            ModelUsed(name=UPLIFT_MODEL, version=d.uplift_model_version, alias="challenger")
        )
    return ScoreResponse(
        request_id=d.request_id,
        session_id=d.session_id,
        scored=d.scored,
        risk=d.risk,
        reason_codes=d.reason_codes,
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

    def service() -> Service:
        return holder["service"]

    @app.post("/score", response_model=ScoreResponse, tags=["scoring"])
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
            "decisions_logged": s.writer.written,
            "decisions_pending": len(s.writer.pending),
            "scoring": {
                "requests": s.scored,
                "batches": s.batches,
                "mean_batch": round(s.scored / s.batches, 2) if s.batches else 0,
                "mean_batch_ms": round(1000 * s.busy_s / s.batches, 1) if s.batches else 0,
            },
        }

    @app.get("/models", tags=["operations"])
    def models() -> dict[str, Any]:
        """The registry versions loaded, per alias, and what the registry says now."""
        return service().models_view()

    @app.post("/reload", tags=["operations"])
    def reload() -> dict[str, Any]:
        """Reload now: models if an alias moved, and the warehouse snapshot."""
        return {"changed": service().reload(snapshot=True), **service().models_view()}

    @app.get("/dashboard", tags=["reporting"], response_class=FileResponse)
    def dashboard() -> FileResponse:
        """The executive dashboard, as last materialised (asset `executive_dashboard`)."""
        from cartintel_assets.ml.dashboard import page_path

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
