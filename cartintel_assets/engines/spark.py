"""Apache Spark as the scale-out engine (PySpark: local mode on one machine, a cluster in
production), with the same feature and model code as the embedded engine. No Dagster import.

- Features: `spark_day_features` is `features.day_features` on Spark.
  - The reference queries (catalogue, quotes, reviews, customer history) and the event and
    session reads are the DuckDB SQL of features/session_features.py, transpiled to Spark SQL by sqlglot and
    run by Spark.
  - The one feature implementation, `features.compute_features`, then runs in Spark tasks, one
    day per task: a cogrouped pandas UDF over the day's events and sessions, with the day's
    reference broadcast.
  - The result equals DuckDB's `session_features` row for row (test_spark_engine).
- Training: `fit_boosted_model_spark` trains the risk model with XGBoost's own Spark estimator
  (`SparkXGBClassifier`; the training asset calls it through the `engine` resource). Its
  workers are Spark tasks, and it stops early on the validation rows. It is calibrated
  (isotonic) on the driver and returned as a `BoostedModel` like the single-machine one, so
  scoring, reason codes, the registry and the service use it unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, timedelta
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp

from cartintel_assets.features.session_features import (
    _EVENTS_SQL,
    _SESSIONS_SQL,
    FEATURE_TYPES,
    CutoffPolicy,
    FeatureReference,
    Query,
    compute_features,
    feature_frame,
    feature_reference,
    reviews_timeline,
)
from cartintel_assets.models.abandonment import BoostedModel, XGBParams, calibrate_on, encoder_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# what the features read; the lake holds each as Parquet partitioned by partition_date
RAW_TABLES: tuple[str, ...] = (
    "raw_sessions",
    "raw_events",
    "raw_products",
    "raw_shipping_quotes",
    "raw_reviews",
)
# the largest Arrow record batch Spark writes (spark.sql.execution.arrow.maxBytesPerBatch < INT_MAX)
ARROW_BATCH_MAX_BYTES = 2**31 - 2
_SPARK_TYPES = {"VARCHAR": "string", "TIMESTAMP": "timestamp_ntz", "BIGINT": "bigint"}


@contextmanager
def spark_session(
    master: str = "local[2]", app: str = "cartintel", driver_memory: str = "4g"
) -> Iterator[SparkSession]:
    """A Spark session in UTC (timestamps are UTC wall-clock, as in the warehouse) whose Python
    workers run this interpreter; stopped on exit unless it was already running (then it is
    that one, e.g. a caller's). Local mode binds to 127.0.0.1. `driver_memory` is the driver
    JVM's heap, where local mode also runs the executors (Spark's default: 1g)."""
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    if running is not None:
        yield running
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
    )
    if master.startswith("local"):
        builder = (
            builder.config("spark.ui.enabled", "false")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4")
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def to_spark_sql(sql: str) -> str:
    """A query of features/session_features.py (DuckDB's dialect, $name parameters) in Spark's dialect.
    sqlglot maps the dialects (casts, NULLS LAST, :name parameters); DuckDB's epoch_us has no
    sqlglot counterpart and becomes Spark's unix_micros (the same epoch microseconds)."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_us":
            return exp.Anonymous(this="unix_micros", expressions=node.expressions)
        return node

    return sqlglot.parse_one(sql, read="duckdb").transform(rewrite).sql(dialect="spark")


def pandas_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A pandas frame from Spark as the numpy columns `features._columns` gives for DuckDB:
    None for missing text, NaN for missing numbers."""
    out = {}
    for k in frame.columns:
        col = frame[k]
        if col.dtype == object:
            out[k] = np.asarray(col.where(col.notna(), None), dtype=object)
        elif col.dtype.kind == "b":
            out[k] = col.to_numpy()
        elif isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
            out[k] = col.to_numpy(dtype=float, na_value=np.nan)
        else:
            out[k] = col.to_numpy()
    return out


def spark_query(spark: SparkSession) -> Query:
    """The reference queries of features/session_features.py run by Spark (see `to_spark_sql`)."""

    def run(sql: str, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return pandas_columns(spark.sql(to_spark_sql(sql), args=dict(params)).toPandas())

    return run


def export_lake(
    con: duckdb.DuckDBPyConnection, lake: Path, tables: tuple[str, ...] = RAW_TABLES
) -> None:
    """Write the warehouse's raw tables as Parquet, one folder per table, partitioned by day (what
    an ingestion into a lake would leave; used to run the Spark engine on a DuckDB warehouse).
    Each table's folder is replaced whole, so the lake mirrors the warehouse exactly."""
    lake.mkdir(parents=True, exist_ok=True)
    for table in tables:
        target = (lake / table).as_posix().replace("'", "''")
        con.execute(
            f"COPY {table} TO '{target}' (FORMAT PARQUET, PARTITION_BY (partition_date), OVERWRITE)"
        )


def register_lake(spark: SparkSession, lake: Path, tables: tuple[str, ...] = RAW_TABLES) -> None:
    """The lake's tables as Spark views under their warehouse names."""
    for table in tables:
        spark.read.parquet(str(lake / table)).createOrReplaceTempView(table)


def _feature_schema() -> str:
    return ", ".join(f"`{c}` {_SPARK_TYPES.get(t, 'double')}" for c, t in FEATURE_TYPES.items())


def spark_day_features(
    spark: SparkSession, days: list[date], policy: CutoffPolicy, history_days: int = 365
) -> pd.DataFrame:
    """`features.day_features` of each day in `days`, computed by Spark from the registered raw
    tables (`register_lake`): the reference of each day (its catalogue and quotes, the reviews,
    the history of that day's customers) from the transpiled queries, then `compute_features` in
    one Spark task per day. Rows in (day, session id) order, columns as FEATURE_TYPES."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    query = spark_query(spark)
    reviews = reviews_timeline(query)  # the same for every day
    references: dict[date, FeatureReference] = {}
    events: list[DataFrame] = []
    sessions: list[DataFrame] = []
    for day in days:
        of_day = f"(SELECT * FROM {{table}} WHERE partition_date = DATE '{day.isoformat()}')"
        day_sessions = f"_sessions_{day.strftime('%Y%m%d')}"
        spark.sql(of_day.format(table="raw_sessions")).createOrReplaceTempView(day_sessions)
        references[day] = feature_reference(
            query,
            [day],
            day - timedelta(days=history_days),
            day,
            customers=day_sessions,
            reviews=reviews,
        )
        sql = _EVENTS_SQL.format(events=of_day.format(table="raw_events"))
        events.append(spark.sql(to_spark_sql(sql)).withColumn("_day", F.lit(day.isoformat())))
        sql = _SESSIONS_SQL.format(sessions=of_day.format(table="raw_sessions"))
        sessions.append(spark.sql(to_spark_sql(sql)).withColumn("_day", F.lit(day.isoformat())))
    shared = spark.sparkContext.broadcast(references)
    columns = list(FEATURE_TYPES)

    def one_day(ev: pd.DataFrame, ss: pd.DataFrame) -> pd.DataFrame:
        if ss.empty:
            return pd.DataFrame({c: [] for c in columns})
        day = date.fromisoformat(str(ss["_day"].iloc[0]))
        cols = compute_features(
            pandas_columns(ss.drop(columns="_day")),
            pandas_columns(ev.drop(columns="_day")),
            shared.value[day],
            policy,
        )
        return feature_frame(cols)[columns]

    result = (
        reduce(DataFrame.unionByName, events)
        .groupBy("_day")
        .cogroup(reduce(DataFrame.unionByName, sessions).groupBy("_day"))
        .applyInPandas(one_day, schema=_feature_schema())
    )
    frame = pd.DataFrame(result.toPandas())
    shared.unpersist()
    frame["_order"] = frame["started_at"].dt.normalize()
    return (
        frame.sort_values(["_order", "session_id"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def fit_boosted_model_spark(
    spark: SparkSession,
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
    num_workers: int = 2,
) -> BoostedModel:
    """`abandonment.fit_boosted_model` trained distributed: XGBoost's Spark estimator on `num_workers`
    Spark tasks, early stopping on `valid`, then isotonic calibration on `valid` (driver)."""
    from xgboost.spark import SparkXGBClassifier

    encoder = encoder_for(train, valid, numeric, categorical)
    features = encoder.features
    rows = pd.DataFrame(np.vstack([encoder.matrix(train), encoder.matrix(valid)]), columns=features)
    rows["label"] = np.concatenate([y_train, y_valid]).astype(float)
    rows["is_valid"] = np.r_[np.zeros(len(train), bool), np.ones(len(valid), bool)]
    # one Arrow batch per training task (see the fit below): checked before any data moves
    per_task = int(rows.memory_usage(index=False).sum()) // num_workers
    if per_task >= ARROW_BATCH_MAX_BYTES:
        raise ValueError(
            f"{len(rows):,} training and validation rows need ~{per_task / 2**30:.1f} GiB per"
            f" training task, over the {ARROW_BATCH_MAX_BYTES / 2**30:.0f} GiB that one Arrow"
            f" batch holds: train with more workers than {num_workers} (the master's cores)"
        )
    frame = spark.createDataFrame(rows).repartition(num_workers)
    estimator = SparkXGBClassifier(
        features_col=features,
        label_col="label",
        validation_indicator_col="is_valid",
        num_workers=num_workers,
        missing=np.nan,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        n_estimators=params.n_estimators,
        min_child_weight=params.min_child_weight,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        reg_lambda=params.reg_lambda,
        early_stopping_rounds=params.early_stopping_rounds,
        eval_metric="logloss",
        verbose=False,  # no evaluation line per round in the workers' logs
        tree_method="hist",
        random_state=params.seed,
    )
    # XGBoost's reader (xgboost.spark.data.append_m, 3.2) fails with KeyError 'values' on an Arrow
    # batch holding no row of the training or of the validation side. Spark cuts a partition's
    # batches every 10,000 rows and every 64 MiB by default (at 5M sessions a partition held
    # ~250 MB: its later batches were training rows only). One batch per partition holds both
    # (repartition deals every input slice, validation rows included, to every partition); an
    # Arrow batch stays under 2 GiB, so a partition must too (checked above).
    whole = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": "0",  # no limit
        "spark.sql.execution.arrow.maxBytesPerBatch": str(ARROW_BATCH_MAX_BYTES),
    }
    before = {k: spark.conf.get(k) for k in whole}
    for k, value in whole.items():
        spark.conf.set(k, value)
    try:
        booster = estimator.fit(frame).get_booster()
    finally:
        for k, old in before.items():
            if old is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, old)
    best = int(booster.attr("best_iteration") or booster.num_boosted_rounds() - 1)
    model = BoostedModel(booster, None, features, encoder.categories, best)
    calibrate_on(model, valid, y_valid)
    return model
