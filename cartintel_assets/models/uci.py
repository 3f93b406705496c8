"""The real-data floor of the risk model: the UCI Online Shoppers Purchasing Intention sessions
(Sakar et al. 2019), through the same training code as the storefront model. No Dagster import.

Label: abandonment = the session did not end in a purchase (not `Revenue`).
Published reference: gradient boosting reaches ROC-AUC ~0.93 and PR-AUC ~0.75 (purchase as the
positive class) on random splits (Heliyon 2023, e15163).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
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
# Tuned inside each training set only (inner stratified 3-fold ROC-AUC): depth and leaf weight,
# at a slower learning rate with room for early stopping
TUNING_GRID: tuple[dict[str, Any], ...] = tuple(
    {"max_depth": d, "min_child_weight": w, "learning_rate": 0.03, "n_estimators": 1500}
    for d in (3, 4, 6)
    for w in (1.0, 5.0)
)
INNER_FOLDS = 3


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


def tuned_params(data: UCIData, train_idx: np.ndarray, base: XGBParams) -> XGBParams:
    """The `TUNING_GRID` entry with the best mean ROC-AUC over an inner stratified k-fold of
    `train_idx` alone: the rows it is then tested on are never seen while choosing."""
    inner = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=base.seed)
    folds = list(inner.split(train_idx, data.y[train_idx]))

    def inner_auc(candidate: dict[str, Any]) -> float:
        params = replace(base, **candidate)
        return float(
            np.mean(
                [
                    _fit_and_score(data, train_idx[tr], train_idx[te], params)["roc_auc"]
                    for tr, te in folds
                ]
            )
        )

    return replace(base, **max(TUNING_GRID, key=inner_auc))


def _fit_tuned_or_not(
    data: UCIData, train_idx: np.ndarray, test_idx: np.ndarray, params: XGBParams, tune: bool
) -> dict[str, float]:
    chosen = tuned_params(data, train_idx, params) if tune else params
    out = _fit_and_score(data, train_idx, test_idx, chosen)
    if tune:  # what the inner folds chose, per outer fold
        out["tuned_max_depth"] = float(chosen.max_depth)
        out["tuned_min_child_weight"] = float(chosen.min_child_weight)
    return out


def uci_cross_validation(
    data: UCIData, params: XGBParams, folds: int = 5, tune: bool = False
) -> list[dict[str, float]]:
    """Stratified k-fold metrics, one dict per fold (`tune`: parameters chosen per fold by
    `tuned_params` on its training part)."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    return [
        _fit_tuned_or_not(data, tr, te, params, tune)
        for tr, te in splitter.split(data.frame, data.y)
    ]


def uci_month_split(data: UCIData, params: XGBParams, tune: bool = False) -> dict[str, float]:
    """Train on February-October, test on November-December (the holiday season shifts it)."""
    month = data.frame["Month"]
    train_idx = np.flatnonzero(month.isin(TRAIN_MONTHS).to_numpy())
    test_idx = np.flatnonzero(month.isin(TEST_MONTHS).to_numpy())
    out = _fit_tuned_or_not(data, train_idx, test_idx, params, tune)
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


def uci_evaluations(data: UCIData, params: XGBParams, tune: bool = False) -> dict[str, Evaluation]:
    """Both evaluations, keyed by split: stratified 5-fold (`cv5`) and by months (`month`);
    `tune`: with parameters tuned inside each training set (`tuned_params`)."""
    common: dict[str, Any] = {**asdict(params), "label": "not Revenue", "dataset": UCI_FILE}
    suffix, name = "", ""
    if tune:
        common["tuning"] = f"inner stratified {INNER_FOLDS}-fold ROC-AUC over {TUNING_GRID}"
        suffix, name = "_tuned", "-tuned-inside-training"
    folds = uci_cross_validation(data, params, tune=tune)
    summary = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
    month = uci_month_split(data, params, tune=tune)
    return {
        f"cv5{suffix}": Evaluation(
            f"stratified-5-fold{name}",
            {"split": "cv5", "tuned": str(tune).lower()},
            common,
            {f"cv_{k}": v for k, v in summary.items()},
            [{f"fold_{k}": v for k, v in fold.items()} for fold in folds],
        ),
        f"month{suffix}": Evaluation(
            f"months-feb-oct-vs-nov-dec{name}",
            {"split": "month", "tuned": str(tune).lower()},
            {**common, "train_months": ",".join(TRAIN_MONTHS), "test_months": "Nov,Dec"},
            {f"test_{k}": v for k, v in month.items()},
            [],
        ),
    }
