"""Scale evidence: the storefront graph materialised end to end at 100k, 1M and 5M sessions, with
the embedded engine (DuckDB in the run's process) and with Apache Spark in local mode, each in a
process of its own whose whole process tree (Spark's JVM and Python workers included) is sampled
for resident memory.

- storefront: the simulator, 20 days; above 1M sessions in parts of the customer base (the
  simulator holds a whole run in memory, ~8 GiB per million sessions): every part has the same
  catalogue, prices and carrier rates over all 20 days and customers of its own, their ids and
  their records' ids prefixed per part, and each day's files hold every part's rows. (Parts
  made of consecutive days instead broke each customer's history and their carts' 7-day
  outcomes at every seam, and the risk model's calibration gate rightly stopped the training
  job.) The simulator is the shop's side, timed apart.
- embedded: Dagster runs the jobs a deployment runs: `storefront_daily_job` per day (ingestion,
  the data-quality gates, session features, review signals), `abandonment_labels_job` per day,
  then `abandonment_training_job` (MLflow run, registry version, gates).
- spark: on a copy of that warehouse, the same `session_features` partitions and the same
  training job with the `engine` resource set to Spark (local[2]); the warehouse is mirrored to
  the Parquet lake at each run, as a deployment without its own lake ingestion does.

`python -m cartintel_tests.benchmarks.scale --sizes 100000,1000000,5000000 --out BENCHMARKS.md`
replaces the section "Scale" of BENCHMARKS.md; `make bench-scale` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cartintel_assets.contracts.schema import TABLES

DAYS = 20
SIZES = (100_000, 1_000_000, 5_000_000)
ENGINES = ("duckdb", "spark")
BLOCK_SESSIONS = 1_000_000  # sessions the simulator holds in memory at once
# a shop simulated in parts of its customers: each part numbers its customers and the records
# that land once (sessions, events, reviews, assignments: ingestion quarantines a key landed
# again) from 0, and all parts share the catalogue and the carrier's rates
PART_IDS = {"customer_id"} | {k for t in TABLES for k in t.key if t.key_unique_across_partitions}
SHARED_TABLES = ("products", "shipping_quotes")
MEMORY_GIB = 24.0
SECTION = "## Scale: the graph end to end at 100k, 1M and 5M sessions"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        pid = int(entry.name)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = pages * _PAGE
    tree, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(p, 0) for p in tree)


def run_measured(
    cmd: list[str], env: dict[str, str], log: Path, progress: str
) -> tuple[float, float, str]:
    """Run a command; wall seconds, peak resident GiB of its process tree (sampled every 0.5 s),
    and its last output line (the child's JSON result). Its lines starting with `progress` are
    echoed; all go to `log`."""
    started = time.perf_counter()
    peak = 0
    lines: list[str] = []
    with (
        log.open("w") as out,
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.5):
                peak = max(peak, tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip())
            if line.startswith(progress):
                print(f"    {line.rstrip()}", flush=True)
        proc.wait()
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        tail = "\n".join(lines[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}); see {log}:\n{tail}")
    return time.perf_counter() - started, peak / 2**30, lines[-1]


# ---- the storefront ------------------------------------------------------------------------------


def land(sessions: int, out: Path) -> dict[str, Any]:
    """Simulate `sessions` over DAYS days into `out/landing`. A shop bigger than the simulator
    can hold at once is simulated as parts of its customers: every part sees the same catalogue,
    prices and carrier rates over all the days, with customers of its own (ids prefixed per
    part), and each day's files hold every part's rows."""
    from cartintel_assets.simulation.storefront import StorefrontConfig, simulate, write_storefront

    parts = -(-sessions // BLOCK_SESSIONS)
    cfg = StorefrontConfig(
        days=DAYS,
        sessions_per_day=sessions // DAYS // parts,
        n_customers=max(6000, sessions // 5) // parts,
        n_products=5000,
    )
    started, n_sessions, n_events = time.perf_counter(), 0, 0
    for part in range(parts):
        # the parts' catalogues are the same (test_simulation): the merge lands part 0's
        store = simulate(replace(cfg, population_seed=part) if parts > 1 else cfg)
        if parts > 1:
            if any(store.bad_event_lines.values()):  # raw lines: their ids cannot be prefixed
                raise ValueError("the scale storefront lands no defective lines")
            for tables in store.landing.values():
                for frame in tables.values():
                    for column in PART_IDS.intersection(frame.columns):
                        frame[column] = f"B{part}" + frame[column].astype(str)
        n_sessions += len(store.truth_sessions)
        n_events += sum(store.event_lines(day) for day in store.landing)
        write_storefront(store, out / "parts" / str(part) if parts > 1 else out)
        del store
        print(
            f"  simulated customer part {part + 1} of {parts}"
            f" ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    if parts > 1:
        _merge_parts(out / "parts", out / "landing", parts)
        shutil.rmtree(out / "parts")
        print(f"  landed {parts} parts as one shop ({time.perf_counter() - started:.0f}s)")
    return {"sessions": n_sessions, "events": n_events, "seconds": time.perf_counter() - started}


def _merge_parts(parts_dir: Path, landing: Path, parts: int) -> None:
    """One landing folder per day holding every part's rows (the shared tables once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for day_dir in sorted((parts_dir / "0" / "landing").iterdir()):
        target = landing / day_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for spec in TABLES:
            files = [
                parts_dir / str(k) / "landing" / day_dir.name / spec.landing_file
                for k in range(parts)
            ]
            if spec.name in SHARED_TABLES:
                shutil.copy(files[0], target / spec.landing_file)
            elif spec.landing_format == "parquet":
                pq.write_table(
                    pa.concat_tables([pq.read_table(f) for f in files], promote_options="default"),
                    target / spec.landing_file,
                )
            else:  # JSON lines: the files one after the other
                with (target / spec.landing_file).open("wb") as merged:
                    for f in files:
                        _append_lines(f, merged)


def _append_lines(source: Path, merged: BinaryIO) -> None:
    """Append a JSON-lines file, ending its last line if it is not (the next file's first line
    stays a line of its own)."""
    with source.open("rb") as f:
        shutil.copyfileobj(f, merged)
        size = f.tell()
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                merged.write(b"\n")


# ---- one engine's runs, in a process of its own -------------------------------------------------


def _step_seconds(result: Any, step: str) -> float:
    return sum(
        e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS" and e.step_key == step
    )


def _failures(result: Any) -> str:
    """What failed in a run, to read in the benchmark's output: the failed asset checks with
    their metadata, and the steps' errors (the run's instance is gone after the benchmark)."""
    out = []
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed:
            d = e.event_specific_data
            md = {k: getattr(v, "value", v) for k, v in d.metadata.items()}
            out.append(
                f"  check {d.asset_key.to_user_string()}.{d.check_name} ({d.severity}): {md}"
            )
        elif e.event_type_value == "STEP_FAILURE":
            error = e.event_specific_data.error
            out.append(f"  step {e.step_key}: {error.message.strip() if error else '?'}")
    return "\n".join(out) or f"  (run {result.run_id}: no failed step or check recorded)"


def materialise(engine: str, landing: Path, warehouse: Path, mlruns: Path) -> dict[str, Any]:
    """The runs of one engine (see the module's docstring); phase times in seconds."""
    import dagster as dg

    from cartintel_assets.cli import QUIET_RUN_CONFIG
    from cartintel_assets.definitions import defs
    from cartintel_assets.defs.features.assets import session_features
    from cartintel_assets.resources import LandingResource, WarehouseResource
    from cartintel_assets.resources.engine import ComputeEngineResource
    from cartintel_assets.resources.mlflow import MLflowResource

    resources = {
        "warehouse": WarehouseResource(database=str(warehouse)),
        "landing": LandingResource(root=str(landing)),
        "engine": ComputeEngineResource(engine=engine),  # type: ignore[arg-type]
        "mlflow_tracking": MLflowResource(
            tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}", artifact_root=str(mlruns / "art")
        ),
    }
    days = LandingResource(root=str(landing)).days()
    t0 = time.perf_counter()
    say = lambda m: print(f"[{engine} {time.perf_counter() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    out: dict[str, Any] = {"engine": engine, "features_s": 0.0}

    def run(job: str, day: str | None = None) -> Any:
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=day,
            instance=instance,
            resources=resources,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        if not result.success:
            raise RuntimeError(f"{job} {day or ''} failed:\n{_failures(result)}")
        return result

    with dg.instance_for_test() as instance:
        if engine == "duckdb":
            start = time.perf_counter()
            for i, day in enumerate(days, 1):
                result = run("storefront_daily_job", day)
                out["features_s"] += _step_seconds(result, "session_features")
                say(f"daily job {i}/{len(days)} {day}")
            out["daily_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for day in days:
                run("abandonment_labels_job", day)
            out["labels_s"] = time.perf_counter() - start
            say("labels")
        else:  # the raw tables and labels are the embedded run's; the heavy steps run again
            start = time.perf_counter()
            for i, day in enumerate(days, 1):
                result = dg.materialize(
                    [session_features],
                    partition_key=day,
                    instance=instance,
                    resources=resources,
                    raise_on_error=True,
                )
                out["features_s"] += _step_seconds(result, "session_features")
                say(f"session_features {i}/{len(days)} {day}")
            out["daily_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = run("abandonment_training_job")
        out["training_s"] = time.perf_counter() - start
        md = result.asset_materializations_for_node("abandonment_model")[0].metadata
        out["test_roc_auc"] = float(md["test_roc_auc"].value)  # type: ignore[arg-type]
        say(f"training: test ROC-AUC {out['test_roc_auc']:.3f}")
    return out


# ---- the report ----------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| sessions (events) | engine | storefront (simulate, land) | **runs, wall time** | daily jobs (embedded) or `session_features` runs (spark) | of which the `session_features` steps | labels | training job (2 models, MLflow, gates) | test ROC-AUC | **peak memory** (process tree) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        labels = f"{r['labels_s']:.0f} s" if "labels_s" in r else "(the embedded run's)"
        out.append(
            f"| {r['sessions']:,} ({r['events']:,}) | {r['engine']} | {r['seconds']:.0f} s |"
            f" **{r['wall_s']:.0f} s** | {r['daily_s']:.0f} s | {r['features_s']:.0f} s |"
            f" {labels} | {r['training_s']:.0f} s | {r['test_roc_auc']:.3f} |"
            f" **{r['peak_gib']:.1f} GiB** |"
        )
    return out


def _growth(rows: list[dict[str, Any]]) -> list[str]:
    """Cost per million sessions between sizes, and where the embedded peak would reach 24 GiB
    if it keeps growing as it did between the two largest sizes measured."""
    out = []
    for engine in ENGINES:
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["sessions"])
        for a, b in zip(mine, mine[1:], strict=False):
            ratio = b["sessions"] / a["sessions"]
            # times compare on one CPU only; memory does not depend on the CPU's speed
            timing = (
                f"time ×{b['wall_s'] / a['wall_s']:.1f} (the `session_features` steps"
                f" ×{b['features_s'] / a['features_s']:.1f})"
                if a.get("cpu") == b.get("cpu")
                else "time not compared (measured on different CPUs)"
            )
            out.append(
                f"- {engine}, {a['size'] / 1e6:g}M → {b['size'] / 1e6:g}M sessions"
                f" (×{ratio:.0f}): {timing}, peak memory ×{b['peak_gib'] / a['peak_gib']:.1f}"
            )
        if engine == "duckdb" and len(mine) >= 2:
            a, b = mine[-2], mine[-1]
            slope = (b["peak_gib"] - a["peak_gib"]) / (b["sessions"] - a["sessions"])
            if slope > 0:
                at = b["sessions"] + (MEMORY_GIB - b["peak_gib"]) / slope
                out.append(
                    f"- embedded peak memory grows by {slope * 1e6:.2f} GiB per million"
                    f" sessions between the two largest sizes: at that rate it reaches"
                    f" {MEMORY_GIB:.0f} GiB near **{at / 1e6:.0f}M sessions** (projected, not run)"
                )
    return out


_ROWS = "<!-- scale rows (JSON; a rerun of one size replaces its rows): "


def split_section(text: str, title: str) -> tuple[str, str, str]:
    """`text` around its section `title` (up to the next `## ` heading): what comes before, the
    section, what comes after; the section is empty when `text` has none."""
    if title not in text:
        return text, "", ""
    head, rest = text.split(title, 1)
    after = rest.find("\n## ")
    if after < 0:
        return head, title + rest, ""
    return head, title + rest[: after + 1], rest[after + 1 :]


def replace_section(path: Path, title: str, lines: list[str]) -> None:
    """Replace the section `title` of `path` by `lines` (or append it), leaving the others as
    they are."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, mine, tail = split_section(text, title)
    if not mine:
        head = text.rstrip("\n") + "\n\n"
    path.write_text(head + "\n".join(lines) + ("\n" + tail if tail else ""))


def write_section(path: Path, rows: list[dict[str, Any]], cpu: str) -> None:
    """Replace the section of BENCHMARKS.md, keeping the other sections and the rows of sizes
    this run did not measure (kept as JSON in the section)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head, mine, tail = split_section(text, SECTION)
    if not mine:
        head = text.rstrip("\n") + "\n\n"
    kept = json.loads(mine.split(_ROWS, 1)[1].split(" -->", 1)[0]) if _ROWS in mine else []
    measured = {(r["size"], r["engine"]) for r in rows}
    rows = sorted(
        [r for r in kept if (r["size"], r["engine"]) not in measured] + rows,
        key=lambda r: (r["size"], r["engine"] != "duckdb"),
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # rows kept from earlier runs may come from another machine: each row names its CPU
    cpus = {r.get("cpu", "not recorded") for r in rows}
    where = f"({cpu})" if cpus == {cpu} else "(each row's CPU: the notes below)"
    body = [
        SECTION,
        "",
        f"Written {stamp} by `make bench-scale` on {os.cpu_count()} cores {where};"
        " each row's measurement date is in its JSON below. Each engine's runs execute in a process of"
        " their own; peak memory is the resident memory of that process and its children"
        " (Spark's JVM and Python workers), sampled every 0.5 s."
        f" {DAYS} days per size. **embedded**: Dagster runs `storefront_daily_job` per day (ingest"
        " the 7 landed tables with quarantine, the data-quality gates, `session_features`, review"
        " signals), `abandonment_labels_job` per day and `abandonment_training_job` (two XGBoost"
        " models with early stopping and calibration, the logistic baseline, the MLflow run,"
        " the registry version and its gates). **spark** (local[2]): on a copy of that warehouse,"
        " `session_features` per day and the same training job with the `engine` resource set to"
        " Spark (XGBoost's Spark estimator); each run mirrors the warehouse's raw tables to the"
        " Parquet lake first, as a deployment without its own lake ingestion does. The storefront"
        " (the simulator; above 1M sessions in parts of the customer base, every part with the"
        " same catalogue, prices and carrier rates over all the days) is the shop's side and timed"
        " apart.",
        "",
        *_table(rows),
        "",
        *_growth(rows),
        *(
            [
                f"- measured on {c}: "
                + ", ".join(
                    f"{r['size'] / 1e6:g}M on {r['engine']}"
                    for r in rows
                    if r.get("cpu", "not recorded") == c
                )
                for c in sorted(cpus)
            ]
            if cpus != {cpu}
            else []
        ),
        # what a row's JSON says of how it was measured (e.g. beside other work on the machine)
        *[f"- {r['size'] / 1e6:g}M on {r['engine']}: {r['note']}" for r in rows if r.get("note")],
        *[
            f"- not measured yet: {size / 1e6:g}M sessions on {engine}"
            f" (`make bench-scale SIZES={size}`)"
            for size in SIZES
            for engine in ENGINES
            if (size, engine) not in {(r["size"], r["engine"]) for r in rows}
        ],
        "",
        _ROWS + json.dumps(rows) + " -->",
        "",
    ]
    path.write_text(head + "\n".join(body) + ("\n" + tail if tail else ""))


@contextmanager
def _size_dir(workdir: Path | None, size: int) -> Iterator[Path]:
    """The folder of one size's runs: kept under `workdir`, or temporary."""
    if workdir is not None:
        (workdir / str(size)).mkdir(parents=True, exist_ok=True)
        yield (workdir / str(size)).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="cartintel-scale-") as tmp:
        yield Path(tmp)


def _storefront(size: int, tmp: Path) -> dict[str, Any]:
    """The storefront landed in `tmp/landing`, simulated unless a run with this folder landed it
    whole (its figures are kept beside it, written last)."""
    figures = tmp / "storefront.json"
    if figures.exists():
        print(f"scale: {size:,} sessions: reusing the storefront landed in {tmp}", flush=True)
        return dict(json.loads(figures.read_text()))
    for cut_short in ("landing", "parts"):  # a landing cut short
        shutil.rmtree(tmp / cut_short, ignore_errors=True)
    print(f"scale: {size:,} sessions: simulating the storefront", flush=True)
    store = land(size, tmp)
    figures.write_text(json.dumps(store))
    return store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep each size's storefront and warehouses in WORKDIR/<size> (default: a temporary "
        "folder, removed after): a later run with the same WORKDIR reuses the landed storefront, "
        "and `--engines spark` alone then runs on the kept embedded warehouse",
    )
    p.add_argument("--materialise", nargs=4, metavar=("ENGINE", "LANDING", "WAREHOUSE", "MLRUNS"))
    args = p.parse_args(argv)
    if args.materialise:  # the child process
        engine, landing, warehouse, mlruns = args.materialise
        print(json.dumps(materialise(engine, Path(landing), Path(warehouse), Path(mlruns))))
        return 0
    from cartintel_tests.benchmarks.run import _cpu

    rows: list[dict[str, Any]] = []
    engines = args.engines.split(",")
    # the runs' logs outlive the temporary folder: a failed run's cause must stay readable
    logs = args.out.resolve().parent / "build" / "bench-scale"
    logs.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        with _size_dir(args.workdir, size) as tmp:
            store = _storefront(size, tmp)
            for engine in engines:
                print(f"scale: {size:,} sessions on {engine}", flush=True)
                warehouse = tmp / f"{engine}.duckdb"
                for stale in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                    stale.unlink(missing_ok=True)  # a run lands into an empty warehouse
                if engine != "duckdb":  # the embedded run's raw tables and labels
                    if not (tmp / "duckdb.duckdb").exists():
                        raise SystemExit(
                            f"{engine} runs on the embedded run's warehouse, and {tmp} has none: "
                            f"run the engines duckdb,{engine} together"
                        )
                    shutil.copy(tmp / "duckdb.duckdb", warehouse)
                env = {
                    **os.environ,
                    "CARTINTEL_PSEUDONYM_KEY": "bench",
                    "CARTINTEL_REPORTS": str(tmp / "reports"),
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                }
                wall, peak, last = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "cartintel_tests.benchmarks.scale",
                        "--materialise",
                        engine,
                        str(tmp / "landing"),
                        str(warehouse),
                        str(tmp / f"mlruns-{engine}"),
                    ],
                    env,
                    logs / f"{size}-{engine}.log",
                    f"[{engine} ",
                )
                row = {
                    **json.loads(last),
                    **store,
                    "size": size,
                    "wall_s": wall,
                    "peak_gib": peak,
                    "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                    "cpu": _cpu(),
                }
                rows.append(row)
                print(f"scale: {json.dumps(row)}", flush=True)
                shutil.rmtree(tmp / f"mlruns-{engine}", ignore_errors=True)
                write_section(args.out, rows, _cpu())  # a long run keeps what it has measured
    print(f"wrote the scale section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
