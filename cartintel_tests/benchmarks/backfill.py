"""Where a backfill's time goes: `cartintel ingest` over 20 simulated days (100k sessions).

Each day is one Dagster run of `storefront_daily_job` (its GX checks are per partition), then one
`abandonment_labels_job` run per day. Measured in one process on a fresh SQLite-backed instance:
the wall time, the time Dagster spends storing its events (wrapping the SQLite event log's
`store_event`), the time in GX validation (wrapping `run_suite`), and the events by kind. A run
over the whole range (Dagster's single-run backfill policy) would still store every per-partition
event (each check's planned/evaluation/output event and each materialization); the rest, the
events every run stores once, bound what it could save. `python -m
cartintel_tests.benchmarks.backfill` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TITLE = "## A 20-day backfill: `cartintel ingest`, where the time goes"
# stored once per partition whatever the runs: a single run over the range keeps these
PER_PARTITION = {
    "ASSET_CHECK_EVALUATION_PLANNED",
    "ASSET_CHECK_EVALUATION",
    "ASSET_MATERIALIZATION",
    "ASSET_MATERIALIZATION_PLANNED",
}


def measure(work: Path, days: int, sessions_per_day: int) -> dict[str, Any]:
    """Simulate, then run `cartintel ingest`'s day loop on a fresh instance, timing its parts."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update(
        {
            "CARTINTEL_LANDING": str(work / "storefront" / "landing"),
            "CARTINTEL_WAREHOUSE": str(work / "warehouse.duckdb"),
            "CARTINTEL_MLRUNS": str(work / "mlruns"),
            "CARTINTEL_SETTINGS": str(work / "cartintel.yaml"),
            "CARTINTEL_REPORTS": str(work / "reports"),
            "DAGSTER_HOME": str(work / "dagster_home"),
        }
    )
    from cartintel_assets.cli import main as cli

    cli(
        [
            "simulate",
            "--days",
            str(days),
            "--sessions-per-day",
            str(sessions_per_day),
            "--out",
            str(work / "storefront"),
        ]
    )
    # imported once the landing is set: the partitions start at its first day
    import dagster as dg
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    import cartintel_assets.quality.suites as suites
    from cartintel_assets.cli import _ingest_days, _progress, ensure_dagster_home
    from cartintel_assets.ingestion.ingest import landed_folders

    spent = {"events": 0.0, "gx": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    SqliteEventLogStorage.store_event = timed("events", SqliteEventLogStorage.store_event)  # type: ignore[method-assign]
    suites.run_suite = timed("gx", suites.run_suite)
    ensure_dagster_home()
    landed = landed_folders(Path(os.environ["CARTINTEL_LANDING"]))[0]
    progress = _progress("backfill")
    said: list[tuple[float, str]] = []

    def say(msg: str) -> None:
        said.append((time.perf_counter(), msg))
        progress(msg)

    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        failed, ok = _ingest_days(instance, landed, say)
        wall = time.perf_counter() - t0
        # the labels runs, one small step each after the daily runs: what a run costs as such
        labels_s = said[-1][0] - said[len(landed) - 1][0]
        kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for run in instance.get_runs():
            for e in instance.all_logs(run.run_id):
                kind = e.dagster_event.event_type_value if e.dagster_event else "LOG"
                kinds[run.job_name][kind] += 1
    daily, labels = kinds["storefront_daily_job"], kinds["abandonment_labels_job"]
    events = sum(daily.values()) + sum(labels.values())
    # each check's output event goes with its evaluation: per partition too
    per_partition = sum(daily[k] + labels[k] for k in PER_PARTITION)
    per_partition += daily["ASSET_CHECK_EVALUATION"]
    per_event = spent["events"] / events
    n = len(landed)
    # one run per job instead of one per day: 2 runs' once-per-run events and set-up, not 2N;
    # a run's set-up is taken as a labels run's wall time beyond storing its events (an upper
    # bound: that includes the labels' own SQL)
    once_per_run_events = events - per_partition
    run_setup = max(0.0, labels_s / n - sum(labels.values()) / n * per_event)
    saved = once_per_run_events * per_event * (n - 1) / n + 2 * (n - 1) * run_setup
    return {
        "days": len(landed),
        "sessions": days * sessions_per_day,
        "ok": ok and not [f for f in failed if f.endswith("(ERROR)")],
        "wall": wall,
        "events": events,
        "per_partition": per_partition,
        "checks_per_day": daily["ASSET_CHECK_EVALUATION"] / len(landed),
        "event_s": spent["events"],
        "gx_s": spent["gx"],
        "per_event_ms": 1000 * per_event,
        "single_run_saves_s": saved,
        "labels_s": labels_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days", type=int, default=20)
    p.add_argument("--sessions-per-day", type=int, default=5000)
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--workdir", type=Path, default=Path("build/bench-backfill"))
    args = p.parse_args(argv)
    from cartintel_tests.benchmarks.run import _cpu
    from cartintel_tests.benchmarks.scale import replace_section

    out = args.out.resolve()
    r = measure(args.workdir.resolve(), args.days, args.sessions_per_day)
    shutil.rmtree(args.workdir, ignore_errors=True)
    rest = r["wall"] - r["event_s"] - r["gx_s"]
    lines = [
        TITLE,
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {_cpu()}, {os.cpu_count()} cores. `python -m"
        " cartintel_tests.benchmarks.backfill` (part of `make bench`): `cartintel ingest`'s"
        f" loop over {r['days']} simulated days ({r['sessions']:,} sessions), one run of the"
        " daily job per day then one labels run per day, on a fresh SQLite-backed Dagster"
        " instance, in one process (the first day includes importing Dagster's and GX's code).",
        "",
        "| days | wall | per day | storing Dagster's events | GX validation | the rest (SQL, Dagster) | events | per event | all gates passed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['days']} | {r['wall']:.0f} s | {r['wall'] / r['days']:.1f} s |"
        f" {r['event_s']:.0f} s ({r['event_s'] / r['wall']:.0%}) |"
        f" {r['gx_s']:.0f} s ({r['gx_s'] / r['wall']:.0%}) | {rest:.0f} s ({rest / r['wall']:.0%}) |"
        f" {r['events']:,} | {r['per_event_ms']:.1f} ms | {'yes' if r['ok'] else 'NO'} |",
        "",
        f"Of the {r['events']:,} events, {r['per_partition']:,} belong to a partition"
        f" ({r['checks_per_day']:.0f} asset checks a day, each planned, evaluated and output, and"
        " the materializations): a run over the whole range stores them too, if each day keeps"
        " its own check results. Dagster 1.13 gives a check result a partition only in a step of"
        " one partition (`AssetCheckResult.to_asset_check_evaluation`), so the daily job stays one"
        " run per day. What one run per job instead of one per day could save at most: the"
        " events every run stores once and each run's set-up (bounded by the labels runs,"
        f" {r['labels_s']:.1f} s for {r['days']}): {r['single_run_saves_s']:.0f} s of"
        f" {r['wall']:.0f} s ({r['single_run_saves_s'] / r['wall']:.0%}).",
        "",
    ]
    replace_section(out, TITLE, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
