"""Scores of open carts: calibrated risk of harmful abandonment and the reasons behind it.

One implementation for batch scoring (the `abandonment_scores` asset) and, later, the online
service: both pass point-in-time feature rows from `features.session_features`. No Dagster import.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.features.session_features import KEY_COLUMNS
from cartintel_assets.models.abandonment import BoostedModel, reason_codes
from cartintel_assets.warehouse.tables import typed_temp_table

# The scores table, in column order; the warehouse adds `partition_date`.
SCORE_COLUMNS: dict[str, str] = {
    "session_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "started_at": "TIMESTAMP",
    "cutoff_at": "TIMESTAMP",
    "risk": "DOUBLE",
    "risk_decile": "INTEGER",
    "reason_codes": "VARCHAR[]",
    "model_name": "VARCHAR",
    "model_version": "VARCHAR",
    "model_alias": "VARCHAR",
    "model_run_id": "VARCHAR",
    "scored_by_run": "VARCHAR",
}


def score_carts(model: BoostedModel, features: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Risk per cart, its decile within the batch (10 = riskiest) and up to `k` reason codes
    (the features raising that cart's risk most, by SHAP contribution)."""
    out = features[list(KEY_COLUMNS)].reset_index(drop=True)
    if features.empty:
        return out.assign(risk=[], risk_decile=[], reason_codes=[])
    risk = model.predict_proba(features)
    out["risk"] = risk
    out["risk_decile"] = risk_deciles(risk)
    out["reason_codes"] = reason_codes(model, features, k)
    return out


def risk_deciles(risk: Any) -> np.ndarray:
    """Decile of each risk within its batch (10 = riskiest; ties broken by order)."""
    ranks = pd.Series(risk).rank(method="first", pct=True).to_numpy()
    return np.ceil(ranks * 10).astype(int)


def write_scores(
    con: duckdb.DuckDBPyConnection, scores: pd.DataFrame, provenance: dict[str, str], into: str
) -> None:
    """Keep `scores` plus the model's provenance (name, version, alias, run, scoring run) in the
    temporary table `into`, with the types of SCORE_COLUMNS, ready to replace a partition."""
    typed_temp_table(con, scores.assign(**provenance), SCORE_COLUMNS, into)
