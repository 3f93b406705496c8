"""The real-data floor of the risk model: the UCI Online Shoppers Purchasing Intention sessions
(Sakar et al. 2019), through the same training code as the storefront model. No Dagster import.

Label: abandonment = the session did not end in a purchase (not `Revenue`).
Published reference: gradient boosting reaches ROC-AUC ~0.93 and PR-AUC ~0.75 (purchase as the
positive class) on random splits (Heliyon 2023, e15163).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from cartintel_assets.models.abandonment import XGBParams, fit_boosted_model, risk_metrics

UCI_FILE = "online_shoppers_intention.csv"
UCI_ROWS = 12330
UCI_EXPERIMENT = "cartintel/uci-online-shoppers"
TRAIN_MONTHS = ("Feb", "Mar", "May", "June", "Jul", "Aug", "Sep", "Oct")  # the data has no Jan, Apr
TEST_MONTHS = ("Nov", "Dec")


@dataclass(frozen=True)
class UCIData:
    frame: pd.DataFrame
    y: np.ndarray  # 1 = abandoned (no purchase)
    numeric: list[str]
    categorical: list[str]


def load_uci(shared_data: Path) -> UCIData:
    """The 12,330 sessions with their abandonment label; a wrong file is an error, not a guess."""
    path = Path(shared_data) / UCI_FILE
    frame = pd.read_csv(path)
    if len(frame) != UCI_ROWS or "Revenue" not in frame.columns:
        raise ValueError(f"{path}: expected {UCI_ROWS} sessions with a Revenue column")
    frame["Weekend"] = frame["Weekend"].astype(int)
    y = (~frame["Revenue"].astype(bool)).to_numpy(dtype=int)
    categorical = ["Month", "VisitorType"]
    numeric = [c for c in frame.columns if c not in (*categorical, "Revenue")]
    return UCIData(frame, y, numeric, categorical)


def _fit_and_score(
    data: UCIData, train_idx: np.ndarray, test_idx: np.ndarray, params: XGBParams
) -> dict[str, float]:
    """Fit on train_idx (a stratified 20 % of it for early stopping and calibration), score
    test_idx; PR-AUC is reported for both classes (the literature uses purchase as positive)."""
    fit_idx, stop_idx = train_test_split(
        train_idx, test_size=0.2, stratify=data.y[train_idx], random_state=params.seed
    )
    f = data.frame
    model = fit_boosted_model(
        f.iloc[fit_idx],
        data.y[fit_idx],
        f.iloc[stop_idx],
        data.y[stop_idx],
        data.numeric,
        data.categorical,
        params,
    )
    p = model.predict_proba(f.iloc[test_idx])
    out = risk_metrics(data.y[test_idx], p)
    out["pr_auc_purchase"] = float(average_precision_score(1 - data.y[test_idx], 1 - p))
    out["best_iteration"] = float(model.best_iteration)
    return out


def uci_cross_validation(
    data: UCIData, params: XGBParams, folds: int = 5
) -> list[dict[str, float]]:
    """Stratified k-fold metrics, one dict per fold."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    return [_fit_and_score(data, tr, te, params) for tr, te in splitter.split(data.frame, data.y)]


def uci_month_split(data: UCIData, params: XGBParams) -> dict[str, float]:
    """Train on February-October, test on November-December (the holiday season shifts it)."""
    month = data.frame["Month"]
    train_idx = np.flatnonzero(month.isin(TRAIN_MONTHS).to_numpy())
    test_idx = np.flatnonzero(month.isin(TEST_MONTHS).to_numpy())
    out = _fit_and_score(data, train_idx, test_idx, params)
    out["rows_train"], out["rows_test"] = float(len(train_idx)), float(len(test_idx))
    return out


@dataclass(frozen=True)
class Evaluation:
    """One evaluation, ready to be logged as a finished MLflow run (`Store.log_evaluation`)."""

    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    steps: list[dict[str, float]]  # per-step metrics (the folds), step = position


def uci_evaluations(data: UCIData, params: XGBParams) -> dict[str, Evaluation]:
    """Both evaluations, keyed by split: stratified 5-fold (`cv5`) and by months (`month`)."""
    common = {**asdict(params), "label": "not Revenue", "dataset": UCI_FILE}
    folds = uci_cross_validation(data, params)
    summary = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
    month = uci_month_split(data, params)
    return {
        "cv5": Evaluation(
            "stratified-5-fold",
            {"split": "cv5"},
            common,
            {f"cv_{k}": v for k, v in summary.items()},
            [{f"fold_{k}": v for k, v in fold.items()} for fold in folds],
        ),
        "month": Evaluation(
            "months-feb-oct-vs-nov-dec",
            {"split": "month"},
            {**common, "train_months": ",".join(TRAIN_MONTHS), "test_months": "Nov,Dec"},
            {f"test_{k}": v for k, v in month.items()},
            [],
        ),
    }
