"""The risk model: beats a logistic baseline on simulated harmful abandonment; real-data floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from cartintel_assets.ml.abandonment import (
    XGBParams,
    baseline_proba,
    fit_logistic_baseline,
    fit_risk_model,
    reason_codes,
    risk_metrics,
    time_split,
)
from cartintel_assets.ml.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    CutoffPolicy,
    day_features,
)
from cartintel_assets.ml.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.ml.simulation import StorefrontConfig, simulate
from cartintel_tests.conftest import ingested_warehouse

CFG = StorefrontConfig(days=21, sessions_per_day=1500)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    con = ingested_warehouse(simulate(CFG), tmp_path_factory.mktemp("model"))
    frames = []
    for i in range(CFG.days - RETURN_WINDOW_DAYS):
        features = day_features(con, CFG.day(i), CutoffPolicy())
        labels = cart_labels(con, CFG.day(i))[["session_id", "abandoned", "harmful"]]
        frames.append(features.merge(labels, on="session_id"))
    return pd.concat(frames, ignore_index=True)


def test_risk_model_beats_logistic_baseline_on_harmful_abandonment(labelled: pd.DataFrame) -> None:
    split = time_split(labelled["started_at"])
    train, valid, test = (labelled[split == s] for s in ("train", "valid", "test"))
    assert (
        train["started_at"].max()
        < valid["started_at"].min()
        <= valid["started_at"].max()
        < test["started_at"].min()
    )
    num, cat = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    y = {
        name: part["harmful"].to_numpy(dtype=int)
        for name, part in (("train", train), ("valid", valid), ("test", test))
    }
    model = fit_risk_model(train, y["train"], valid, y["valid"], num, cat, XGBParams())
    p = model.predict_proba(test)
    m = risk_metrics(y["test"], p, test["cart_value"].to_numpy())
    baseline = roc_auc_score(
        y["test"], baseline_proba(fit_logistic_baseline(train, y["train"], num), test, num)
    )
    assert m["roc_auc"] > 0.8
    assert m["roc_auc"] - baseline > 0.005  # measured 0.839 vs 0.825 on this storefront
    assert m["calibration_error"] < 0.05
    assert m["top_decile_lift"] > 2.0
    # seeded: the same data gives the same model
    again = fit_risk_model(train, y["train"], valid, y["valid"], num, cat, XGBParams())
    assert np.array_equal(again.predict_proba(test), p)
    codes = reason_codes(model, test.head(50))
    assert all(set(c) <= set(model.features) for c in codes) and any(codes)


def test_shuffled_labels_give_a_useless_model(labelled: pd.DataFrame) -> None:
    split = time_split(labelled["started_at"])
    train, valid, test = (labelled[split == s] for s in ("train", "valid", "test"))
    rng = np.random.default_rng(0)
    num, cat = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    model = fit_risk_model(
        train,
        rng.permutation(train["harmful"].to_numpy(dtype=int)),
        valid,
        valid["harmful"].to_numpy(dtype=int),
        num,
        cat,
        XGBParams(),
    )
    assert (
        risk_metrics(test["harmful"].to_numpy(dtype=int), model.predict_proba(test))["roc_auc"]
        < 0.6
    )


@pytest.mark.realdata
def test_uci_online_shoppers_floor(shared_data: Path) -> None:
    """Published reference: gradient boosting ROC-AUC ~0.93 (Heliyon 2023, e15163), random splits."""
    df = pd.read_csv(shared_data / "online_shoppers_intention.csv")
    assert len(df) == 12330
    y = (~df["Revenue"].astype(bool)).to_numpy(dtype=int)  # abandonment = no purchase
    df["Weekend"] = df["Weekend"].astype(int)
    num = [c for c in df.columns if c not in ("Month", "VisitorType", "Revenue")]
    cat = ["Month", "VisitorType"]
    aucs = []
    for train_idx, test_idx in StratifiedKFold(5, shuffle=True, random_state=7).split(df, y):
        fit_idx, stop_idx = train_test_split(
            train_idx, test_size=0.2, stratify=y[train_idx], random_state=7
        )
        model = fit_risk_model(
            df.iloc[fit_idx], y[fit_idx], df.iloc[stop_idx], y[stop_idx], num, cat, XGBParams()
        )
        aucs.append(risk_metrics(y[test_idx], model.predict_proba(df.iloc[test_idx]))["roc_auc"])
    assert np.mean(aucs) >= 0.92, aucs  # measured 0.929
