"""The Dagster graph, materialised in-process on small simulated storefronts."""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cartintel_assets.contracts.schema import TABLES_BY_NAME
from cartintel_assets.definitions import defs, storefront_daily_job
from cartintel_assets.defs.friction.assets import review_aggregates
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.resources import LandingResource, WarehouseResource
from cartintel_assets.simulation.storefront import StorefrontConfig, simulate, write_storefront
from cartintel_tests.conftest import SMALL

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run(landing: Path, warehouse: Path, day: str) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(storefront_daily_job.name)
    # a context-managed instance removes its temporary storage deterministically
    with dg.instance_for_test() as instance:
        return _execute(job, instance, landing, warehouse, day)


def _execute(
    job: dg.JobDefinition, instance: dg.DagsterInstance, landing: Path, warehouse: Path, day: str
) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        partition_key=day,
        instance=instance,
        resources={
            "warehouse": WarehouseResource(database=str(warehouse)),
            "landing": LandingResource(root=str(landing)),
        },
        raise_on_error=False,
        run_config=QUIET,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.event_specific_data.check_name: e.event_specific_data  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.asset_materializations_for_node}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def small_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store")
    write_storefront(simulate(StorefrontConfig(**{**SMALL.__dict__, "bad_row_rate": 0.01})), out)
    return out / "landing"


def test_daily_job_materialises_everything_and_gates_pass(
    small_landing: Path, tmp_path: Path
) -> None:
    wh = tmp_path / "wh.duckdb"
    # customers land on the day they sign up; later days' sessions reference them
    assert _run(small_landing, wh, SMALL.day(0).isoformat()).success
    day = SMALL.day(1).isoformat()
    result = _run(small_landing, wh, day)
    assert result.success
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    graph = defs.resolve_asset_graph()
    # trained by its own job on all labelled days; scored by its own job once a model exists;
    # review aggregates span all days (friction_job); uplift and the plan have their own jobs,
    # and so have monitoring, promotion, the dashboard, the sensor-recorded retraining request
    # and the accounting of foreign logs (`cartintel ingest` runs it after the days); an
    # erasure runs only when someone asks for one (erasure_job)
    trained = {
        "landed_log_accounting",
        "erasure_log",
        "abandonment_drift",
        "abandonment_performance",
        "model_promotions",
        "retraining_request",
        "uplift_model",
        "intervention_plan",
        "abandonment_model",
        "abandonment_scores",
        "product_review_signals",
        "category_review_signals",
        "customer_segments",
        "segment_profiles",
        "friction_drivers",
        "friction_index",
        "executive_dashboard",
    }
    assert set(mats) == {k.to_user_string() for k in graph.get_all_asset_keys()} - trained
    checks = _checks(result)
    daily_checks = [
        k for k in graph.asset_check_keys if k.asset_key.to_user_string() not in trained
    ]
    assert len(checks) == len(daily_checks)
    # only warnings may fail on 1 % bad rows (e.g. a purchase whose add_to_cart was quarantined)
    failed = {n: c.severity for n, c in checks.items() if not c.passed}
    assert set(failed.values()) <= {dg.AssetCheckSeverity.WARN}, failed
    events = mats["raw_events"].metadata
    assert (
        events["rows_landed"].value
        == events["rows_accepted"].value + events["rows_quarantined"].value
    )
    assert events["rows_quarantined"].value > 0
    card = mats["data_quality_scorecard"].metadata
    # the landed bad rows fail their (WARN) expectations, so no standard passes cleanly; none fails
    assert card["consistency_row_score"].value < 1.0 and card["accuracy_status"].value == "warn"

    # review signals: one row per accepted review of the day; aggregates over all days so far
    assert _run(small_landing, wh, SMALL.day(2).isoformat()).success  # day 1 has few reviews
    with dg.instance_for_test() as instance:
        friction = dg.materialize(
            [review_aggregates],
            instance=instance,
            resources={"warehouse": WarehouseResource(database=str(wh))},
            run_config={**QUIET, "ops": {"review_aggregates": {"config": {"min_reviews": 1}}}},
        )
    assert friction.success
    con = duckdb.connect(str(wh), read_only=True)
    n_reviews, n_signals, n_dropped = con.execute(
        "SELECT (SELECT count(*) FROM raw_reviews), (SELECT count(*) FROM review_signals),"
        " (SELECT count(*) FROM raw_reviews r ANTI JOIN review_signals s USING (review_id))"
    ).fetchall()[0]
    assert n_reviews == n_signals > 0 and n_dropped == 0
    by_category = con.execute("SELECT sum(reviews) FROM category_review_signals").fetchall()[0][0]
    by_product = con.execute("SELECT sum(reviews) FROM product_review_signals").fetchall()[0][0]
    assert by_category == by_product == n_reviews
    con.close()

    # re-materialising the partition replaces it: same counts, no duplicates
    con = duckdb.connect(str(wh), read_only=True)
    before = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in (
            "raw_events",
            "quarantined_events",
            "cart_sessions",
            "data_quality_scorecard",
            "dq_check_results",
        )
    }
    con.close()
    assert _run(small_landing, wh, day).success
    con = duckdb.connect(str(wh), read_only=True)
    after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in before}
    assert (
        con.execute("SELECT count(*) - count(DISTINCT event_id) FROM raw_events").fetchall()[0][0]
        == 0
    )
    con.close()
    assert after == before


def test_a_failed_blocking_check_stops_downstream_assets_in_the_same_run(tmp_path: Path) -> None:
    out = tmp_path / "store"
    write_storefront(
        simulate(StorefrontConfig(**{**SMALL.__dict__, "days": 1, "bad_row_rate": 0.2})), out
    )
    result = _run(out / "landing", tmp_path / "wh.duckdb", SMALL.day(0).isoformat())
    checks = _checks(result)
    share = checks["raw_events_quarantine_share_within_limit"]
    assert not share.passed and share.severity == dg.AssetCheckSeverity.ERROR
    gate = checks["raw_events_passes_quality_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "raw_events_quarantine_share_within_limit" in gate.metadata["failed_error_checks"].value  # type: ignore[index]
    assert checks["raw_sessions_passes_quality_gate"].passed
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string()  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert "raw_events" in mats and "quarantined_events" in mats
    assert "cart_sessions" not in mats  # downstream of the failed blocking gate
    # ... because Dagster never started its step once the blocking check failed, not because it
    # crashed: the only failed step is that check's (a failed blocking check fails its step)
    steps = {(e.event_type_value, e.step_key) for e in result.all_events if e.step_key}
    assert {k for t, k in steps if t == "STEP_FAILURE"} == {
        "raw_events_raw_events_passes_quality_gate"
    }
    started = {k for t, k in steps if t == "STEP_START"}
    assert "raw_events_raw_events_passes_quality_gate" in started and "cart_sessions" not in started
    assert "data_quality_scorecard" in mats  # reports the failure instead of hiding it
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    card = {
        standard: (status, score)
        for standard, status, score in con.execute(
            "SELECT standard, status, row_score FROM data_quality_scorecard"
        ).fetchall()
    }
    con.close()
    assert card["accuracy"][0] == "fail"  # the quarantine-share check is an accuracy check
    assert all(score < 0.99 for _, score in card.values())  # 20 % bad rows show in every standard


def _ingest_in_process(args: tuple[str, str, str]) -> tuple[int, float, float]:
    """Ingest one day; the rows accepted, and when this process started and finished."""
    landing, wh, day = args
    started = time.time()
    resource = WarehouseResource(database=wh)
    total = 0
    for name in ("customers", "products", "sessions", "events"):
        with resource.get_connection() as con:
            total += ingest_partition(
                con, TABLES_BY_NAME[name], date.fromisoformat(day), Path(landing), "k"
            ).accepted
    with resource.reader() as con:
        con.execute("SELECT count(*) FROM raw_events").fetchall()
    return total, started, time.time()


def _log(wh: str) -> list[tuple]:
    con = duckdb.connect(wh, read_only=True)
    rows = con.execute(
        "SELECT table_name, partition_date, landed, accepted, quarantined FROM ingestion_log"
        " ORDER BY 1, 2"
    ).fetchall()
    con.close()
    return rows


def test_concurrent_runs_serialise_on_the_warehouse(small_landing: Path, tmp_path: Path) -> None:
    wh = str(tmp_path / "wh.duckdb")
    days = [SMALL.day(i).isoformat() for i in range(SMALL.days)] * 2
    # a process pool that reports a dead worker (BrokenProcessPool) instead of waiting forever
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        jobs = [(str(small_landing), wh, d) for d in days]
        runs = list(pool.map(_ingest_in_process, jobs, timeout=600))
    assert all(total > 0 for total, _, _ in runs)
    # the writers did run at the same time (so the lock, not the schedule, kept them apart)
    spans = sorted((start, end) for _, start, end in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    # and they left what one writer, day after day, leaves
    alone = str(tmp_path / "alone.duckdb")
    for d in days[: SMALL.days]:
        _ingest_in_process((str(small_landing), alone, d))
    assert _log(wh) == _log(alone) and len(_log(alone)) == 4 * SMALL.days
    con = duckdb.connect(wh, read_only=True)
    per_day = con.execute(
        "SELECT count(*) FROM ingestion_log GROUP BY table_name, partition_date"
    ).fetchall()
    dupes = con.execute("SELECT count(*) - count(DISTINCT event_id) FROM raw_events").fetchall()[0][
        0
    ]
    con.close()
    assert all(n == 1 for (n,) in per_day) and dupes == 0
