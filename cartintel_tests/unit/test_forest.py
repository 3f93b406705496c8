"""The compiled forest predicts what XGBoost predicts, on trained models: missing values (default
directions), both objectives, intercepts, early-stopped prefixes, several boosters at once."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from cartintel_assets.models.forest import forest
from cartintel_tests.unit.boosters import CASES, ROWS, noisy_rows, train, train_case


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return noisy_rows()


def _xgboost(booster: xgb.Booster, x: np.ndarray, rounds: int) -> np.ndarray:
    return booster.predict(xgb.DMatrix(x), iteration_range=(0, rounds))


@pytest.mark.parametrize(("objective", "depth", "base"), CASES)
def test_predictions_equal_xgboost(
    data: tuple[np.ndarray, np.ndarray], objective: str, depth: int, base: float
) -> None:
    x, signal = data
    booster = train_case(x, signal, objective, depth, base)
    test = np.vstack([x, x * 1.7])  # values between and beyond the training splits too
    missing = np.isnan(test).any(axis=1)
    assert missing.sum() > 5000  # where the default directions matter
    for rounds in (120, 40):  # all trees, and an early-stopped prefix
        trees = forest([(booster, rounds)])
        assert trees is not None
        expected = _xgboost(booster, test, rounds)
        got = trees.predict(test)[:, 0]
        assert got.dtype == np.float64 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)  # the same float32 operations, in order
    # one row at a time (the scoring service) gives what a batch gives
    one = np.concatenate([trees.predict(test[i : i + 1])[:, 0] for i in range(30)])
    np.testing.assert_array_equal(one, got[:30])


def test_several_boosters_in_one_call(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Output k of a stacked forest is booster k's prediction (its trees, its intercept, its
    link), as the uplift model's dozen learners are asked per cart."""
    x, signal = data
    boosters = [
        (train(x, (signal > 0).astype(float), "binary:logistic", 4, 0.4), 90),
        (train(x, signal, "reg:squarederror", 3, 0.1), 0),
        (train(x, (signal > 1).astype(float), "binary:logistic", 5, 0.5, eta=0.3), 120),
    ]
    trees = forest(boosters)
    assert trees is not None
    got = trees.predict(x)
    assert got.shape == (ROWS, 3)
    for k, (booster, rounds) in enumerate(boosters):
        np.testing.assert_array_equal(got[:, k], _xgboost(booster, x, rounds or 120))
        alone = forest([(booster, rounds)])
        assert alone is not None
        np.testing.assert_array_equal(got[:, k], alone.predict(x)[:, 0])


def test_models_it_does_not_cover_are_left_to_xgboost(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, signal = data
    y = (signal > 0).astype(float)
    assert forest([(train(x, y, "binary:logitraw", 3, 0.5), 0)]) is None
    classes = np.digitize(signal, [-1.0, 1.0]).astype(float)
    multi = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=classes),
        10,
    )
    assert forest([(multi, 0)]) is None
    dart = train(x, y, "binary:logistic", 3, 0.5, booster="dart")
    assert forest([(dart, 0)]) is None
    # boosters that read rows of different widths cannot share one call
    narrow = train(x[:, :5], y, "binary:logistic", 3, 0.5)
    assert forest([(train(x, y, "binary:logistic", 3, 0.5), 0), (narrow, 0)]) is None
    trees = forest([(narrow, 0)])
    assert trees is not None
    with pytest.raises(ValueError, match="expected rows of 5 features"):
        trees.predict(x)
