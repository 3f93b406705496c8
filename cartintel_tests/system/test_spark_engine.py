"""Apache Spark (local mode) as the scale-out engine: the same session features as DuckDB, and a
distributed risk model as good as the single-machine one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cartintel_assets.defs.features.assets import session_features
from cartintel_assets.engines import spark as spark_engine
from cartintel_assets.engines.spark import (
    export_lake,
    register_lake,
    spark_day_features,
    spark_session,
    to_spark_sql,
)
from cartintel_assets.features.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    FEATURE_TYPES,
    NUMERIC_FEATURES,
    CutoffPolicy,
    day_features,
)
from cartintel_assets.models.abandonment import XGBParams, time_split
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.engine import ComputeEngineResource
from cartintel_assets.simulation.storefront import StorefrontConfig, simulate
from cartintel_tests.conftest import ingested_warehouse

# enough days for history, labels and a time split; drift and bad lines as the demo has them
CFG = StorefrontConfig(days=RETURN_WINDOW_DAYS + 6, sessions_per_day=1500, n_customers=4000)


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """The storefront in a DuckDB warehouse, and the same raw tables as a Parquet lake."""
    out = tmp_path_factory.mktemp("spark")
    con = ingested_warehouse(simulate(CFG), out, str(out / "wh.duckdb"))
    export_lake(con, out / "lake")
    yield con, out / "lake"
    con.close()


@pytest.fixture(scope="module")
def warehouse(lake: tuple[duckdb.DuckDBPyConnection, Path]) -> duckdb.DuckDBPyConnection:
    return lake[0]


@pytest.fixture(scope="module")
def spark(lake: tuple[duckdb.DuckDBPyConnection, Path]) -> Iterator[object]:
    with spark_session("local[2]") as session:
        register_lake(session, lake[1])
        yield session


def test_the_reference_sql_transpiles_to_spark() -> None:
    sql = "SELECT epoch_us(ts) AS at_us, 'NaN'::DOUBLE AS x FROM t WHERE d = $day - 30"
    out = to_spark_sql(sql)
    assert "UNIX_MICROS(ts)" in out and "CAST('NaN' AS DOUBLE)" in out
    assert ":day - 30" in out


def test_spark_computes_the_same_session_features_as_duckdb(
    warehouse: duckdb.DuckDBPyConnection, spark: object
) -> None:
    days = [CFG.day(i) for i in range(CFG.days - 4, CFG.days)]  # the days before: history
    duck = pd.concat([day_features(warehouse, d, CutoffPolicy()) for d in days], ignore_index=True)
    ours = spark_day_features(spark, days, CutoffPolicy())  # type: ignore[arg-type]
    assert len(duck) > 4000 and len(ours) == len(duck)
    assert list(ours.columns) == list(FEATURE_TYPES)
    duck = duck.sort_values("session_id", ignore_index=True)
    ours = ours.sort_values("session_id", ignore_index=True)
    differ = []
    for c, t in FEATURE_TYPES.items():
        a, b = duck[c], ours[c]
        if t == "VARCHAR":
            same = a.fillna("\0").equals(b.fillna("\0"))
        elif t == "TIMESTAMP":
            same = bool((pd.to_datetime(a) == pd.to_datetime(b)).all())
        else:
            same = np.array_equal(
                a.to_numpy(dtype=float, na_value=np.nan),
                b.to_numpy(dtype=float, na_value=np.nan),
                equal_nan=True,
            )
        if not same:
            differ.append(c)
    assert differ == []  # identical, not close: the same code on the same rows


def _labelled(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    frames = []
    for i in range(CFG.days - RETURN_WINDOW_DAYS):
        features = day_features(con, CFG.day(i), CutoffPolicy())
        labels = cart_labels(con, CFG.day(i))[["session_id", "harmful"]]
        frames.append(features.merge(labels, on="session_id"))
    return pd.concat(frames, ignore_index=True)


def test_distributed_training_matches_the_single_machine_model(
    warehouse: duckdb.DuckDBPyConnection, spark: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _labelled(warehouse)
    split = time_split(data["started_at"])
    parts = {s: data[split == s] for s in ("train", "valid", "test")}
    y = {s: parts[s]["harmful"].to_numpy(dtype=int) for s in parts}
    num, cat = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    params = XGBParams()
    args = (parts["train"], y["train"], parts["valid"], y["valid"], num, cat, params)
    # through the resource, as the training asset calls it (the test's local[2] session)
    single = ComputeEngineResource().fit_boosted_model(*args)
    # Arrow batches of 500 rows or 64 KiB: most hold only training or only validation rows,
    # which XGBoost's Spark reader cannot take (the defaults, 10,000 rows and 64 MiB, do this at
    # ~1M and ~5M sessions); the fit lifts both limits for its own job, and only for it
    small = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": "500",
        "spark.sql.execution.arrow.maxBytesPerBatch": "65536b",
    }
    for k, v in small.items():
        spark.conf.set(k, v)  # type: ignore[attr-defined]
    spread = ComputeEngineResource(engine="spark").fit_boosted_model(*args)
    for k, v in small.items():
        assert spark.conf.get(k) == v  # type: ignore[attr-defined]
        spark.conf.unset(k)  # type: ignore[attr-defined]
    auc_single = roc_auc_score(y["test"], single.predict_proba(parts["test"]))
    auc_spark = roc_auc_score(y["test"], spread.predict_proba(parts["test"]))
    print(f"test ROC-AUC: single machine {auc_single:.4f}, Spark (2 workers) {auc_spark:.4f}")
    assert auc_single > 0.8
    assert abs(auc_spark - auc_single) < 0.01
    # the same encoding, so everything downstream (reason codes, registry, service) takes it
    assert spread.features == single.features and spread.categories == single.categories
    assert spread.best_iteration > 10
    assert spread.contributions(parts["test"].head(5)).shape == (5, len(single.features) + 1)
    # a task's rows must fit in one Arrow batch: beyond it, a clear error before any training job
    monkeypatch.setattr(spark_engine, "ARROW_BATCH_MAX_BYTES", 1024)
    with pytest.raises(ValueError, match="train with more workers than 2"):
        ComputeEngineResource(engine="spark").fit_boosted_model(*args)


def test_the_engine_is_chosen_by_the_resource_config(
    lake: tuple[duckdb.DuckDBPyConnection, Path], spark: object, tmp_path: Path
) -> None:
    """The session_features asset, materialised with each engine: the same warehouse rows."""
    con, lake_dir = lake
    con.execute("CHECKPOINT")
    db = tmp_path / "wh.duckdb"
    shutil.copy(
        con.execute("SELECT path FROM duckdb_databases() WHERE NOT internal").fetchall()[0][0], db
    )
    day = CFG.day(CFG.days - 1).isoformat()
    tables = {}
    engines = {
        "duckdb": ComputeEngineResource(),
        "spark": ComputeEngineResource(engine="spark", lake=str(lake_dir)),
        # no lake given: the warehouse is mirrored beside its file first
        "spark, mirrored": ComputeEngineResource(engine="spark"),
    }
    for name, engine in engines.items():
        result = dg.materialize(
            [session_features],
            partition_key=day,
            resources={"warehouse": WarehouseResource(database=str(db)), "engine": engine},
        )
        assert result.success
        with duckdb.connect(str(db), read_only=True) as wh:
            tables[name] = wh.sql("SELECT * FROM session_features ORDER BY session_id").df()
    assert len(tables["duckdb"]) > 1000
    assert (tmp_path / "lake" / "raw_events").is_dir()
    pd.testing.assert_frame_equal(tables["spark"], tables["duckdb"])
    pd.testing.assert_frame_equal(tables["spark, mirrored"], tables["duckdb"])


def test_a_day_without_carts_gives_no_rows(spark: object) -> None:
    empty = spark_day_features(spark, [date(2020, 1, 1)], CutoffPolicy())  # type: ignore[arg-type]
    assert empty.empty and list(empty.columns) == list(FEATURE_TYPES)
