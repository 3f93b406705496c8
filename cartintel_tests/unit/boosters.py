"""Rows and boosters for the tests of the compiled tree walks (`test_forest`, `test_tree_shap`):
noisy rows with missing values and a coded category, and small seeded boosters trained on them."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

ROWS, FEATURES = 6000, 9
# (objective, depth, base score) of the boosters both walks are held to: each objective they
# cover, shallow and deep trees, intercepts on either side of 0.5
CASES = [("binary:logistic", 5, 0.3), ("binary:logistic", 7, 0.6), ("reg:squarederror", 3, 0.7)]


def noisy_rows() -> tuple[np.ndarray, np.ndarray]:
    """(rows, signal): every feature sometimes missing, one with few distinct values (ties)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, FEATURES))
    x[:, 4] = rng.integers(0, 5, ROWS)  # a coded category: few distinct values, ties
    x[rng.random(x.shape) < 0.15] = np.nan  # every feature is sometimes missing
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])
    signal += np.where(np.isnan(x[:, 3]), 1.0, 0.0) + 0.5 * np.nan_to_num(x[:, 4])
    return x, signal + rng.normal(size=ROWS)


def train(
    x: np.ndarray, y: np.ndarray, objective: str, depth: int, base: float, **extra: object
) -> xgb.Booster:
    """120 rounds, seeded, one thread; `extra`: further XGBoost parameters."""
    params = {
        "objective": objective,
        "max_depth": depth,
        "min_child_weight": 5,
        "eta": 0.1,
        "base_score": base,
        "nthread": 1,
        "seed": 3,
        **extra,
    }
    return xgb.train(params, xgb.DMatrix(x, label=y), 120)


def train_case(
    x: np.ndarray, signal: np.ndarray, objective: str, depth: int, base: float
) -> xgb.Booster:
    """The booster of one of CASES: a classifier of the signal's sign, or a regression on it."""
    y = (signal > 0).astype(float) if objective.startswith("binary") else signal
    return train(x, y, objective, depth, base)
