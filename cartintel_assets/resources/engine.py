"""Where the heavy steps run: the embedded DuckDB warehouse (default), or Apache Spark with the
same feature code (engines/spark.py). Choosing is configuration of this resource, never a code
path of its own in an asset."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from cartintel_assets.features.session_features import FEATURE_TYPES, CutoffPolicy, day_features
from cartintel_assets.models.abandonment import BoostedModel, XGBParams, fit_boosted_model


class ComputeEngineResource(dg.ConfigurableResource):
    """The engine of the heavy steps (session features, risk-model training): `duckdb` in the
    warehouse process, or `spark` (a local or cluster master) reading the raw tables from a
    Parquet lake and training with XGBoost's Spark estimator."""

    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb", description="duckdb (embedded) or spark (Apache Spark)."
    )
    spark_master: str = Field(
        default="local[2]", description="Spark master URL: local[N] or the cluster's."
    )
    spark_driver_memory: str = Field(
        default="4g",
        description="Heap of Spark's driver JVM (in local mode the executors run in it too).",
    )
    lake: str = Field(
        default="",
        description="Parquet lake Spark reads the raw tables from. Empty: <warehouse dir>/lake, "
        "refreshed from the warehouse before each Spark computation.",
    )

    def day_features(
        self, con: duckdb.DuckDBPyConnection, day: date, policy: CutoffPolicy, history_days: int
    ) -> pd.DataFrame:
        """`features.day_features` on the chosen engine; the rows are also left in the temporary
        table `_session_features` with FEATURE_TYPES, as the embedded engine leaves them."""
        if self.engine == "duckdb":
            return day_features(con, day, policy, history_days)
        from cartintel_assets.engines.spark import (
            export_lake,
            register_lake,
            spark_day_features,
            spark_session,
        )
        from cartintel_assets.warehouse.tables import typed_temp_table

        # beside the warehouse file this connection has open
        ((warehouse,),) = con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()
        lake = Path(self.lake) if self.lake else Path(str(warehouse)).parent / "lake"
        if not self.lake:  # the warehouse is the source of truth: mirror it first
            export_lake(con, lake)
        with spark_session(self.spark_master, driver_memory=self.spark_driver_memory) as spark:
            register_lake(spark, lake)
            frame = spark_day_features(spark, [day], policy, history_days)
        typed_temp_table(con, frame, FEATURE_TYPES, "_session_features")
        return con.table("_session_features").df()

    def fit_boosted_model(
        self,
        train: pd.DataFrame,
        y_train: np.ndarray,
        valid: pd.DataFrame,
        y_valid: np.ndarray,
        numeric: list[str],
        categorical: list[str],
        params: XGBParams,
    ) -> BoostedModel:
        """`abandonment.fit_boosted_model` on the chosen engine: on Spark, XGBoost's Spark estimator
        with one training task per core the master offers (the same encoding, early stopping and
        calibration, so the model is registered and served like any other)."""
        if self.engine == "duckdb":
            return fit_boosted_model(train, y_train, valid, y_valid, numeric, categorical, params)
        from cartintel_assets.engines.spark import fit_boosted_model_spark, spark_session

        with spark_session(self.spark_master, driver_memory=self.spark_driver_memory) as spark:
            return fit_boosted_model_spark(
                spark,
                train,
                y_train,
                valid,
                y_valid,
                numeric,
                categorical,
                params,
                num_workers=spark.sparkContext.defaultParallelism,
            )
