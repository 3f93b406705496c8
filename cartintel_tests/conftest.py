"""Shared fixtures: small seeded storefronts written to temporary folders."""

from __future__ import annotations

import atexit
import dataclasses
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from filelock import FileLock

from cartintel_assets import settings
from cartintel_assets.contracts.schema import TABLES
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.simulation.storefront import (
    Storefront,
    StorefrontConfig,
    simulate,
    write_storefront,
)

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# pytest-xdist runs two workers on two cores, each training XGBoost with 2 OpenMP threads: with
# libgomp's default spin-waiting, every parallel region waits for a thread that the other
# worker has descheduled. Two such trainings at once took 52 s instead of 7 s on this machine;
# passive waiting ends it (set before xgboost, scikit-learn or a subprocess loads libgomp)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# drift reports of test runs go to a temporary folder, never into the checkout's data/; the
# process that made it (pytest-xdist's workers inherit it) removes it when the run ends
if "CARTINTEL_REPORTS" not in os.environ:
    os.environ["CARTINTEL_REPORTS"] = tempfile.mkdtemp(prefix="cartintel-reports-")
    atexit.register(shutil.rmtree, os.environ["CARTINTEL_REPORTS"], ignore_errors=True)

SMALL = StorefrontConfig(days=3, sessions_per_day=400, n_customers=1500, n_products=120)


# The code addresses each MLflow store through its own client; MLflow's global ("fluent") URI
# points nowhere, so any code that still relies on it fails here instead of writing elsewhere.
POISONED_TRACKING_URI = "unset-global-uri://cartintel-passes-a-store-explicitly"


@pytest.fixture(scope="session", autouse=True)
def no_global_mlflow_uri() -> Iterator[None]:
    import mlflow

    mlflow.set_tracking_uri(POISONED_TRACKING_URI)
    mlflow.set_registry_uri(POISONED_TRACKING_URI)
    yield


@pytest.fixture(scope="session")
def default_store() -> Storefront:
    """The default storefront, in memory (the one `make demo` lands)."""
    return simulate(StorefrontConfig())


@pytest.fixture(scope="session")
def bad_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Storefront, Path]:
    """A small storefront with 2 % bad event lines of every kind, landed on disk."""
    store = simulate(StorefrontConfig(**{**SMALL.__dict__, "bad_row_rate": 0.02}))
    out = tmp_path_factory.mktemp("bad_store")
    write_storefront(store, out)
    return store, out / "landing"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets; their absence is an error, never a skip."""
    path = settings.shared_data_dir()
    if not (path / "otto_sessions_fixture.csv").exists():
        raise FileNotFoundError(f"real datasets not found in {path}: set CARTINTEL_SHARED_DATA")
    return path


def ingested_warehouse(
    store: Storefront, out: Path, database: str = ":memory:"
) -> duckdb.DuckDBPyConnection:
    """Land `store` under `out` and ingest every day of it into a DuckDB warehouse."""
    write_storefront(store, out)
    con = duckdb.connect(database)
    for i in range(store.config.days):
        for spec in TABLES:
            ingest_partition(con, spec, store.config.day(i), out / "landing", "test-key")
    return con


def labelled_warehouse(
    store: Storefront, out: Path, database: str = ":memory:", features: bool = False
) -> duckdb.DuckDBPyConnection:
    """`ingested_warehouse` plus every day's abandonment labels (and, if asked, its point-in-time
    session features), as the daily assets write them."""
    from cartintel_assets.features.labels import cart_labels
    from cartintel_assets.features.session_features import CutoffPolicy, day_features
    from cartintel_assets.warehouse.tables import replace_partition

    con = ingested_warehouse(store, out, database)
    for i in range(store.config.days):
        day = store.config.day(i)
        if features:
            day_features(con, day, CutoffPolicy())
            replace_partition(con, "session_features", "_session_features", day)
        cart_labels(con, day)
        replace_partition(con, "abandonment_labels", "_cart_labels", day)
    return con


@contextmanager
def built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder that all the pytest-xdist workers of this test run share (pytest-xdist's
    documented FileLock pattern): the first worker to ask builds it, holding the lock (`False`:
    build it now); the others wait for the lock and find it built (`True`: read it). A build
    that failed is started again from an empty folder."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / name
    with FileLock(f"{folder}.lock"):
        done = folder / ".built"
        if done.exists():
            yield folder, True
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        yield folder, False
        done.touch()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Storefront:
    """The storefront `make demo` lands (twice the default traffic): simulated once per test run,
    the other workers load it."""
    from cartintel_assets.simulation.storefront import DEMO_STOREFRONT

    with built_once(tmp_path_factory, "demo_store") as (folder, built):
        path = folder / "store.pickle"
        if built:
            store: Storefront = pickle.loads(path.read_bytes())
            return store
        store = simulate(DEMO_STOREFRONT)
        path.write_bytes(pickle.dumps(store, protocol=pickle.HIGHEST_PROTOCOL))
        return store


@pytest.fixture(scope="session")
def demo_warehouse(demo_store: Storefront, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo storefront ingested, labelled and featurised into a DuckDB file, built once per
    test run. Shared by every worker: open it read-only, or copy it."""
    with built_once(tmp_path_factory, "demo_warehouse") as (out, built):
        db = out / "wh.duckdb"
        if not built:
            labelled_warehouse(demo_store, out, str(db), features=True).close()
        return db


# The default storefront's seed and two more: the simulator-truth floors of the models must hold
# on each, not only on the storefront they were measured on.
TRUTH_SEEDS: tuple[int, ...] = (7, 8, 9)


def _seeded(
    tmp_path_factory: pytest.TempPathFactory, name: str, config: StorefrontConfig
) -> tuple[Storefront, Path]:
    """`config`'s storefront and a DuckDB file with it ingested, labelled and featurised, built
    once per test run under `name` and shared by every worker."""
    with built_once(tmp_path_factory, name) as (out, built):
        path, db = out / "store.pickle", out / "wh.duckdb"
        if built:
            return pickle.loads(path.read_bytes()), db
        store = simulate(config)
        labelled_warehouse(store, out, str(db), features=True).close()
        path.write_bytes(pickle.dumps(store, protocol=pickle.HIGHEST_PROTOCOL))
        return store, db


@pytest.fixture(scope="session", params=TRUTH_SEEDS, ids=lambda s: f"seed{s}")
def seeded_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Storefront, Path]:
    """The default storefront under one of `TRUTH_SEEDS`, with its warehouse (open it
    read-only, or copy it)."""
    seed = int(request.param)
    return _seeded(
        tmp_path_factory, f"default_seed{seed}", dataclasses.replace(StorefrontConfig(), seed=seed)
    )


@pytest.fixture(scope="session", params=TRUTH_SEEDS, ids=lambda s: f"demo-seed{s}")
def seeded_demo_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Storefront, Path]:
    """`demo_store` and `demo_warehouse` under one of `TRUTH_SEEDS` (the demo's own seed reuses
    them): for the floors that need the demo's traffic, such as uplift's effect recovery."""
    from cartintel_assets.simulation.storefront import DEMO_STOREFRONT

    seed = int(request.param)
    if seed == DEMO_STOREFRONT.seed:
        return request.getfixturevalue("demo_store"), request.getfixturevalue("demo_warehouse")
    return _seeded(
        tmp_path_factory, f"demo_seed{seed}", dataclasses.replace(DEMO_STOREFRONT, seed=seed)
    )


def check_results(result: Any) -> dict[str, bool]:
    """Pass/fail of every asset check evaluated in a Dagster run result."""
    return {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def asset_resources(db: Path, mlruns: Path, **overrides: Any) -> dict[str, Any]:
    """The resources every materialising test passes: its warehouse file, its MLflow store and
    the default rollout settings (override any by keyword)."""
    from cartintel_assets.resources import WarehouseResource
    from cartintel_assets.resources.engine import ComputeEngineResource
    from cartintel_assets.resources.mlflow import MLflowResource
    from cartintel_assets.resources.rollout import RolloutResource

    return {
        "warehouse": WarehouseResource(database=str(db)),
        "engine": ComputeEngineResource(),
        "mlflow_tracking": MLflowResource(
            tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}",
            artifact_root=str(mlruns / "artifacts"),
        ),
        "rollout": RolloutResource(),
        **overrides,
    }
