"""The risk model: beats a logistic baseline on simulated harmful abandonment; real-data floor."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from cartintel_assets.features.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    CutoffPolicy,
    day_features,
)
from cartintel_assets.models.abandonment import (
    BoostedModel,
    XGBParams,
    baseline_proba,
    fit_boosted_model,
    fit_logistic_baseline,
    reason_codes,
    risk_metrics,
    time_split,
)
from cartintel_assets.models.scoring import SCORE_COLUMNS, score_carts, write_scores
from cartintel_assets.models.uci import UCI_EXPERIMENT, load_uci, uci_evaluations
from cartintel_assets.registry.tracking import Store
from cartintel_assets.simulation.storefront import Storefront, StorefrontConfig, simulate
from cartintel_tests.conftest import ingested_warehouse

CFG = StorefrontConfig(days=21, sessions_per_day=1500)


@pytest.fixture(scope="module")
def store() -> Storefront:
    return simulate(CFG)


@pytest.fixture(scope="module")
def labelled(store: Storefront, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    con = ingested_warehouse(store, tmp_path_factory.mktemp("model"))
    frames = []
    for i in range(CFG.days - RETURN_WINDOW_DAYS):
        features = day_features(con, CFG.day(i), CutoffPolicy())
        labels = cart_labels(con, CFG.day(i))[["session_id", "abandoned", "harmful"]]
        frames.append(features.merge(labels, on="session_id"))
    return pd.concat(frames, ignore_index=True)


def _split_fit(labelled: pd.DataFrame) -> tuple[BoostedModel, dict[str, pd.DataFrame]]:
    split = time_split(labelled["started_at"])
    parts = {s: labelled[split == s] for s in ("train", "valid", "test")}
    y = {s: parts[s]["harmful"].to_numpy(dtype=int) for s in parts}
    model = fit_boosted_model(
        parts["train"],
        y["train"],
        parts["valid"],
        y["valid"],
        list(NUMERIC_FEATURES),
        list(CATEGORICAL_FEATURES),
        XGBParams(),
    )
    return model, parts


def test_risk_model_beats_logistic_baseline_on_harmful_abandonment(labelled: pd.DataFrame) -> None:
    model, parts = _split_fit(labelled)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    assert (
        train["started_at"].max()
        < valid["started_at"].min()
        <= valid["started_at"].max()
        < test["started_at"].min()
    )
    num, cat = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    y = {name: part["harmful"].to_numpy(dtype=int) for name, part in parts.items()}
    p = model.predict_proba(test)
    m = risk_metrics(y["test"], p, test["cart_value"].to_numpy())
    baseline = roc_auc_score(
        y["test"], baseline_proba(fit_logistic_baseline(train, y["train"], num), test, num)
    )
    assert m["roc_auc"] > 0.8
    assert m["roc_auc"] - baseline > 0.015  # measured 0.863 vs 0.827 on this storefront
    assert m["calibration_error"] < 0.05
    assert m["top_decile_lift"] > 2.0
    # seeded: the same data gives the same model
    again = fit_boosted_model(train, y["train"], valid, y["valid"], num, cat, XGBParams())
    assert np.array_equal(again.predict_proba(test), p)
    # the compiled forest (test_forest) predicts what Booster.predict does: on these trees of
    # depth 5, bit for bit
    dm, rounds = xgb.DMatrix(model.matrix(test)), (0, model.best_iteration + 1)
    expected = model.booster.predict(dm, iteration_range=rounds, validate_features=False)
    assert model.trees is not None
    assert np.array_equal(model.trees.predict(model.matrix(test))[:, 0], expected)
    assert np.array_equal(model.raw_score(test), expected)  # many rows: XGBoost's own
    shap = model.booster.predict(
        dm, iteration_range=rounds, validate_features=False, pred_contribs=True
    )
    assert shap.shape == (len(test), len(model.features) + 1)
    # the tabulated TreeSHAP (test_tree_shap) is XGBoost's, to its float32 rounding
    assert model.shap_tables is not None
    np.testing.assert_allclose(model.contributions(test), shap, rtol=0, atol=2e-5)
    codes = reason_codes(model, test.head(50))
    assert all(set(c) <= set(model.features) for c in codes) and any(codes)


def test_risk_floors_hold_on_every_seed(seeded_store: tuple[Storefront, Path]) -> None:
    """The floors above, on the default storefront under three seeds (14 days, 7 of them with a
    complete return window): skill over the logistic baseline, calibration, top-decile lift."""
    _, db = seeded_store
    with duckdb.connect(str(db), read_only=True) as con:
        labelled = con.execute(
            "SELECT f.*, l.abandoned, l.harmful FROM session_features f JOIN abandonment_labels l"
            " USING (session_id) WHERE l.label_complete ORDER BY f.started_at, f.session_id"
        ).df()
    assert len(labelled) > 5000
    model, parts = _split_fit(labelled)
    train, test = parts["train"], parts["test"]
    y_train, y_test = train["harmful"].to_numpy(dtype=int), test["harmful"].to_numpy(dtype=int)
    m = risk_metrics(y_test, model.predict_proba(test), test["cart_value"].to_numpy())
    num = list(NUMERIC_FEATURES)
    baseline = roc_auc_score(
        y_test, baseline_proba(fit_logistic_baseline(train, y_train, num), test, num)
    )
    print(f"\nROC-AUC {m['roc_auc']:.3f} vs baseline {baseline:.3f}, {m}")
    assert m["roc_auc"] > 0.8
    assert m["roc_auc"] - baseline > 0.015
    assert m["calibration_error"] < 0.05
    assert m["top_decile_lift"] > 2.0


SHIPPING_REASONS = {"shipping_share", "shipping_cost", "delivery_days"}


def test_reason_codes_name_the_planted_shipping_friction(
    store: Storefront, labelled: pd.DataFrame
) -> None:
    """Where the simulator made shipping cost and delivery time hold a cart back (their planted
    logit term), the cart's top-3 reason codes name a shipping feature; where it did not, they
    rarely do. Features with no planted effect (hour, weekday) are almost never named."""
    model, parts = _split_fit(labelled)
    truth = store.truth_sessions.set_index("session_id")
    test = parts["test"][parts["test"]["session_id"].isin(truth.index)]
    codes = reason_codes(model, test)
    named = np.array([bool(set(c) & SHIPPING_REASONS) for c in codes])
    planted = truth.loc[test["session_id"], "friction_shipping"].to_numpy()
    strong, weak = planted <= -1.0, planted > -0.2  # logit of buying, lowered by shipping
    assert strong.sum() > 200 and weak.sum() > 500
    # measured 0.64 vs 0.12 on this storefront
    assert named[strong].mean() > 0.5
    assert named[strong].mean() > 4 * named[weak].mean()
    noise = np.mean([bool({"hour", "weekday"} & set(c)) for c in codes])
    assert noise < 0.02


def test_shuffled_labels_give_a_useless_model(labelled: pd.DataFrame) -> None:
    split = time_split(labelled["started_at"])
    train, valid, test = (labelled[split == s] for s in ("train", "valid", "test"))
    rng = np.random.default_rng(0)
    num, cat = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    model = fit_boosted_model(
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
def test_uci_online_shoppers_floor(shared_data: Path, tmp_path: Path) -> None:
    """Published reference: gradient boosting ROC-AUC ~0.93 (Heliyon 2023, e15163), random splits.
    The runs land in their own MLflow experiment."""
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "art")
    experiment = store.experiment_id(UCI_EXPERIMENT)
    evaluations = uci_evaluations(load_uci(shared_data), XGBParams())
    runs = {k: store.log_evaluation(experiment, **asdict(e)) for k, e in evaluations.items()}
    client = store.client
    cv = client.get_run(runs["cv5"]).data.metrics
    # measured 0.930 and 0.749 (0.9295 and 0.721 while isotonic steps tied carts the booster
    # ranked apart); published ~0.937 and ~0.754, purchase as the positive class
    assert cv["cv_roc_auc"] >= 0.925, cv
    assert cv["cv_pr_auc_purchase"] >= 0.74, cv
    folds = client.get_metric_history(runs["cv5"], "fold_roc_auc")
    assert len(folds) == 5 and np.mean([m.value for m in folds]) == pytest.approx(cv["cv_roc_auc"])
    month = client.get_run(runs["month"]).data.metrics
    assert (month["test_rows_train"], month["test_rows_test"]) == (7605, 4725)
    assert month["test_roc_auc"] > 0.82, month  # measured 0.829: the holiday months shift it


def test_scores_keep_types_and_provenance_also_for_an_empty_day(labelled: pd.DataFrame) -> None:
    model, parts = _split_fit(labelled)
    test = parts["test"]
    provenance = {
        "model_name": "m",
        "model_version": "3",
        "model_alias": "challenger",
        "model_run_id": "r",
        "scored_by_run": "d",
    }
    con = duckdb.connect()
    for frame in (test, test.head(0)):
        scores = score_carts(model, frame)
        write_scores(con, scores, provenance, "_s")
        back = con.execute("SELECT * FROM _s").df()
        assert list(back.columns) == list(SCORE_COLUMNS)
        assert len(back) == len(frame)
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE _s)").fetchall())
        assert types == SCORE_COLUMNS
    full = score_carts(model, test)
    assert np.array_equal(full["risk"].to_numpy(), model.predict_proba(test))
    # deciles split the batch evenly and follow the risk
    assert full.groupby("risk_decile")["risk"].max().is_monotonic_increasing
    assert full["risk_decile"].value_counts().max() - full["risk_decile"].value_counts().min() <= 1


@pytest.mark.realdata
def test_uci_floor_with_tuning_inside_the_training_sets(shared_data: Path) -> None:
    """Parameters chosen by an inner 3-fold of each training set only: never by the test rows."""
    import cartintel_assets.models.uci as uci

    data = load_uci(shared_data)
    seen: list[set[int]] = []
    choose = uci.tuned_params

    def spy(d: uci.UCIData, train_idx: np.ndarray, base: XGBParams) -> XGBParams:
        seen.append(set(train_idx.tolist()))
        return choose(d, train_idx, base)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uci, "tuned_params", spy)
        # one thread: 114 small fits, each a short parallel region per round, run 3x slower
        # with 2 threads under the suite's passive OpenMP waiting (same trees either way)
        evaluations = uci.uci_evaluations(data, XGBParams(nthread=1), tune=True)
    # 5 outer folds, then the month split: each chose from its own training rows
    outer = StratifiedKFold(5, shuffle=True, random_state=XGBParams().seed)
    trains = [set(tr.tolist()) for tr, _ in outer.split(data.frame, data.y)]
    trains.append(set(np.flatnonzero(data.frame["Month"].isin(uci.TRAIN_MONTHS)).tolist()))
    assert seen == trains
    cv, month = evaluations["cv5_tuned"].metrics, evaluations["month_tuned"].metrics
    # measured 0.931 / 0.751 and 0.835 (fixed parameters: 0.930 / 0.749 and 0.829)
    assert cv["cv_roc_auc"] >= 0.925 and cv["cv_pr_auc_purchase"] >= 0.745, cv
    assert month["test_roc_auc"] >= 0.83, month
    depths = [s["fold_tuned_max_depth"] for s in evaluations["cv5_tuned"].steps]
    assert len(depths) == 5 and set(depths) <= {3.0, 4.0, 6.0}
