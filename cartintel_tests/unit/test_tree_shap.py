"""The tabulated TreeSHAP equals XGBoost's own `pred_contribs` on trained models: missing values
(default directions), features split on twice along a path, both objectives, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from cartintel_assets.models.abandonment import BoostedModel, reason_codes
from cartintel_assets.models.tree_shap import tree_shap
from cartintel_tests.unit.boosters import CASES, FEATURES, noisy_rows, train, train_case


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return noisy_rows()


@pytest.mark.parametrize(("objective", "depth", "base"), CASES)
def test_contributions_equal_xgboost_pred_contribs(
    data: tuple[np.ndarray, np.ndarray], objective: str, depth: int, base: float
) -> None:
    x, signal = data
    booster = train_case(x, signal, objective, depth, base)
    for rounds in (120, 40):  # all trees, and an early-stopped prefix
        shap = tree_shap(booster, rounds)
        assert shap is not None
        # paths that split on one feature twice (their splits merge) are among the cases
        repeated = np.diff(shap.leaf_nodes) > shap.leaf_width
        if depth >= 5:
            assert repeated.any()
        test = x[:1500]
        expected = booster.predict(
            xgb.DMatrix(test), iteration_range=(0, rounds), pred_contribs=True
        )
        got = shap.contributions(test)
        assert got.shape == expected.shape == (len(test), FEATURES + 1)
        # XGBoost computes in float32; these are float32 tables summed in float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
        # local accuracy: the contributions add up to the margin
        margin = booster.predict(xgb.DMatrix(test), iteration_range=(0, rounds), output_margin=True)
        np.testing.assert_allclose(got.sum(axis=1), margin, rtol=0, atol=5e-5)
        # the rows with missing values are where the default directions matter
        missing = np.isnan(test).any(axis=1)
        assert missing.sum() > 500
        assert np.abs(got[missing] - expected[missing]).max() < 2e-5
    # one row at a time (the scoring service) gives what a batch gives
    one = np.vstack([shap.contributions(test[i : i + 1]) for i in range(20)])
    np.testing.assert_array_equal(one, got[:20])


def test_reason_codes_equal_those_of_xgboost_contributions(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, signal = data
    booster = train(x, (signal > 0).astype(float), "binary:logistic", 5, 0.5)
    names = [f"f{i}" for i in range(FEATURES)]
    model = BoostedModel(booster, None, names, {}, best_iteration=99)
    frame = {n: x[:2000, i] for i, n in enumerate(names)}
    xgb_shap = booster.predict(xgb.DMatrix(x[:2000]), iteration_range=(0, 100), pred_contribs=True)[
        :, :-1
    ]
    top = np.argsort(-xgb_shap, axis=1)[:, :3]
    expected = [[names[j] for j in row if xgb_shap[i, j] > 0] for i, row in enumerate(top)]
    got = reason_codes(model, frame)
    # rows whose 3rd and 4th features are closer than float32 rounding may swap; none here is
    ordered = np.sort(-xgb_shap, axis=1)
    clear = np.abs(np.diff(ordered[:, :4], axis=1)).min(axis=1) > 1e-4
    assert clear.mean() > 0.95
    assert [g for g, c in zip(got, clear, strict=True) if c] == [
        e for e, c in zip(expected, clear, strict=True) if c
    ]


def test_models_it_does_not_cover_are_explained_by_xgboost(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, signal = data
    raw = train(x, (signal > 0).astype(float), "binary:logitraw", 3, 0.5)
    assert tree_shap(raw, 0) is None
    names = [f"f{i}" for i in range(FEATURES)]
    model = BoostedModel(raw, None, names, {}, best_iteration=119)
    expected = raw.predict(xgb.DMatrix(x[:100]), pred_contribs=True)
    np.testing.assert_array_equal(model.contributions({}, x[:100]), expected)
    softprob = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(x, label=np.digitize(signal, [-0.5, 0.5])),
        5,
    )
    assert tree_shap(softprob, 0) is None


def test_rows_of_another_width_are_refused(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, signal = data
    shap = tree_shap(train(x, signal, "reg:squarederror", 2, 0.0), 0)
    assert shap is not None
    with pytest.raises(ValueError, match="expected rows of 9 features"):
        shap.contributions(x[:5, :8])
