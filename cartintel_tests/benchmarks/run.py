"""Benchmarks (not tests): simulator and ingestion throughput at 1M sessions → BENCHMARKS.md.

Run with `make bench`. Absolute times on a shared 2-core machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cartintel_assets.ml.ingest import ingest_partition
from cartintel_assets.ml.schema import TABLES
from cartintel_assets.ml.simulation import StorefrontConfig, simulate, write_storefront


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def run(sessions: int, days: int) -> list[str]:
    cfg = StorefrontConfig(
        days=days,
        sessions_per_day=sessions // days,
        n_customers=max(6000, sessions // 5),
        n_products=5000,
    )
    print(f"simulating {sessions:,} sessions over {days} days", flush=True)
    t0 = time.perf_counter()
    store = simulate(cfg, lambda m: print(f"  {time.perf_counter() - t0:6.1f}s {m}", flush=True))
    t_sim = time.perf_counter() - t0
    n_sessions = len(store.truth_sessions)
    n_events = sum(store.event_lines(day) for day in store.landing)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_storefront(store, tmp)
        t_write = time.perf_counter() - t1
        del store
        con = duckdb.connect(str(Path(tmp) / "wh.duckdb"))
        t2 = time.perf_counter()
        t_events = 0.0
        for i in range(days):
            for spec in TABLES:
                ts = time.perf_counter()
                ingest_partition(con, spec, cfg.day(i), Path(tmp) / "landing", "bench")
                if spec.name == "events":
                    t_events += time.perf_counter() - ts
            print(f"  ingested day {i + 1}/{days} ({time.perf_counter() - t2:6.1f}s)", flush=True)
        t_ingest = time.perf_counter() - t2
        con.close()
    return [
        f"| simulate {n_sessions:,} sessions ({n_events:,} events, in memory) | {t_sim:.1f} s | {n_events / t_sim:,.0f} events/s |",
        f"| write landing files (JSONL + Parquet) | {t_write:.1f} s | {n_events / t_write:,.0f} events/s |",
        f"| **simulate + land, end to end** (target < 120 s) | **{t_sim + t_write:.1f} s** | {n_events / (t_sim + t_write):,.0f} events/s |",
        f"| ingest all 7 tables, {days} daily partitions (validate, quarantine, write DuckDB) | {t_ingest:.1f} s | {n_events / t_ingest:,.0f} events/s overall |",
        f"| of which `events` | {t_events:.1f} s | {n_events / t_events:,.0f} events/s |",
        f"| peak resident memory of the benchmark process | {_peak_rss_gib():.1f} GiB | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=20)
    args = parser.parse_args()
    rows = run(args.sessions, args.days)
    header = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on {os.cpu_count()} cores"
        f" ({_cpu()}), Python {platform.python_version()}. Absolute times on this shared machine are"
        " indicative only.",
        "",
        "## Simulator and ingestion at 1M sessions",
        "",
        "Target: simulate 1,000,000 sessions in under 2 minutes. Ingestion is the same code the"
        " Dagster assets run (`ingest_partition`), without the GX validation and run bookkeeping.",
        "",
        "| step | time | throughput |",
        "|---|---|---|",
    ]
    args.out.write_text("\n".join(header + rows) + "\n")
    print("\n".join(rows))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
