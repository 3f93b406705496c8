"""The abandonment-risk model: XGBoost with early stopping and isotonic calibration, its metrics
and reason codes. Generic over a feature frame, so the simulated storefront and real data (UCI
Online Shoppers) go through the same code. No Dagster import.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cartintel_assets.models.forest import FOREST_ROWS, Forest, forest
from cartintel_assets.models.segmentation import (
    HISTORY_INPUTS,
    SEGMENT_FEATURES,
    SegmentationModel,
    segment_features,
)
from cartintel_assets.models.tree_shap import TreeShap, tree_shap

# feature rows: a frame, or (the scoring service) numpy columns of equal length
Rows: TypeAlias = pd.DataFrame | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class XGBParams:
    """Hyperparameters of the risk model (hist trees, seeded)."""

    max_depth: int = 5
    learning_rate: float = 0.05
    n_estimators: int = 600
    min_child_weight: float = 5.0
    subsample: float = 0.9
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 40
    seed: int = 7
    nthread: int = 2
    # binary:logistic for probabilities; reg:squarederror for effects (the X-learner's 2nd stage)
    objective: str = "binary:logistic"


TIE_BREAK = 1e-6  # the raw score's weight in a calibrated probability: ranks ties, moves none


@dataclass
class BoostedModel:
    """A trained XGBoost booster, its isotonic calibrator (for the risk classifier; none for the
    uplift learners' regressors) and the encoding of its inputs.

    A model that learnt from SEGMENT_FEATURES keeps the segmentation they came from and computes
    them itself from each row's history features, so training, batch scoring and the service
    place a shopper with the same segments whatever segmentation is current. Rows are read as
    given while `segmentation` is None (during training, from the frame's own columns)."""

    booster: xgb.Booster
    calibrator: IsotonicRegression | None
    features: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    best_iteration: int = 0
    segmentation: SegmentationModel | None = None

    @property
    def _places_segments(self) -> bool:
        return self.segmentation is not None and any(f in SEGMENT_FEATURES for f in self.features)

    @property
    def inputs(self) -> list[str]:
        """The columns a row must have: its features, but for those it computes itself, whose
        history inputs it needs instead."""
        if not self._places_segments:
            return list(self.features)
        own = [f for f in self.features if f not in SEGMENT_FEATURES]
        return [*own, *(c for c in HISTORY_INPUTS if c not in own)]

    def derived(self, frame: Rows) -> dict[str, np.ndarray]:
        """The features this model computes from the rows itself: its segment features."""
        if not self._places_segments or self.segmentation is None:
            return {}
        return segment_features(self.segmentation, frame)

    def matrix(self, frame: Rows, derived: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Encode feature rows (a frame, or columns of equal length) as the float matrix the
        booster expects (unknown category: -1); `derived`: `self.derived(frame)` if the caller
        already has it."""
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values())))
        out = np.empty((n, len(self.features)))
        derived = self.derived(frame) if derived is None else derived
        for j, f in enumerate(self.features):
            col = derived[f] if f in derived else frame[f]
            if f in self.categories:  # position in the training categories; unknown or NaN: -1
                codes = self._codes[f]
                if n > 1000:  # pandas' map is faster on big inputs, a loop on small ones
                    out[:, j] = pd.Series(col).map(codes).fillna(-1).to_numpy(dtype=float)
                else:
                    out[:, j] = [codes.get(v, -1) for v in np.asarray(col)]
            elif isinstance(col, np.ndarray):
                out[:, j] = col
            elif isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiub":
                out[:, j] = col.to_numpy()
            elif col.dtype.kind in "fiub":  # nullable extension types
                out[:, j] = col.to_numpy(dtype=float, na_value=np.nan)
            else:
                out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        return out

    @functools.cached_property
    def _codes(self) -> dict[str, dict[Any, int]]:
        return {f: {v: i for i, v in enumerate(vs)} for f, vs in self.categories.items()}

    def encodes_like(self, other: BoostedModel) -> bool:
        """Whether `other` encodes rows into the same matrix (one encoding serves both)."""
        return (
            self.features == other.features
            and self.categories == other.categories
            and self.segmentation == other.segmentation
        )

    def save(self, folder: Path) -> None:
        """Write the booster (XGBoost JSON) and the encoding and calibration (JSON); no pickle."""
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / "booster.json")
        meta = {
            "features": self.features,
            "categories": self.categories,
            "best_iteration": self.best_iteration,
            "calibration_x": self.calibrator.X_thresholds_.tolist()
            if self.calibrator is not None
            else None,
            "calibration_y": self.calibrator.y_thresholds_.tolist()
            if self.calibrator is not None
            else None,
            "segmentation": asdict(self.segmentation) if self.segmentation is not None else None,
        }
        (folder / "risk_model.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> BoostedModel:
        meta = json.loads((folder / "risk_model.json").read_text())
        booster = xgb.Booster()
        booster.load_model(folder / "booster.json")
        iso = None
        if meta["calibration_x"] is not None:
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            x, y = np.array(meta["calibration_x"]), np.array(meta["calibration_y"])
            iso.fit(x, y)  # refitting on the knots reproduces the same piecewise-linear map
        seg = meta.get("segmentation")  # (models saved before segment features have none)
        return cls(
            booster,
            iso,
            meta["features"],
            meta["categories"],
            int(meta["best_iteration"]),
            SegmentationModel(**seg) if seg is not None else None,
        )

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns with stable types: floats, and strings for categories
        (missing: "unknown"), so a signature can describe them."""
        out = pd.DataFrame(index=frame.index)
        for f in self.inputs:
            if f in self.categories:
                out[f] = frame[f].astype(object).where(frame[f].notna(), "unknown").astype(str)
            else:
                out[f] = pd.to_numeric(frame[f], errors="coerce").astype(float)
        return out

    def raw_score(self, frame: Rows, matrix: np.ndarray | None = None) -> np.ndarray:
        """The booster's prediction (`matrix`: the rows already encoded): walked by `forest` for
        a few rows of a model it covers (the same bits), by XGBoost otherwise."""
        x = self.matrix(frame) if matrix is None else matrix
        if len(x) < FOREST_ROWS and self.trees is not None:
            return self.trees.predict(x)[:, 0]
        return self.booster.inplace_predict(x, iteration_range=(0, self.best_iteration + 1))

    def predict_proba(self, frame: Rows, matrix: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probability of the positive class (`matrix`: the rows already encoded)."""
        p = np.asarray(self.raw_score(frame, matrix), dtype=float)
        if self.calibrator is None:
            return p
        # the isotonic map is piecewise linear between its knots (what `predict` computes,
        # without its per-call validation); its flat steps would tie carts the booster ranks
        # apart (on UCI, ROC-AUC 0.9295 calibrated vs 0.9310 raw), so the raw score breaks the
        # ties: strictly increasing, and within TIE_BREAK of the calibrated probability
        cal = np.interp(p, self.calibrator.X_thresholds_, self.calibrator.y_thresholds_)
        return (1.0 - TIE_BREAK) * cal + TIE_BREAK * p  # within [0, 1], as both are

    @functools.cached_property
    def trees(self) -> Forest | None:
        """The booster's trees up to its best iteration as a compiled `Forest`, built on first
        use (None: a model it does not cover)."""
        return forest([(self.booster, self.best_iteration + 1)])

    def contributions(self, frame: Rows, matrix: np.ndarray | None = None) -> np.ndarray:
        """Exact SHAP contributions per feature (last column: bias), on the margin scale
        (`matrix`: the rows already encoded): the tabulated TreeSHAP (`tree_shap`) of every
        model it covers, XGBoost's own `pred_contribs` otherwise."""
        x = self.matrix(frame) if matrix is None else matrix
        if self.shap_tables is not None:
            return self.shap_tables.contributions(x)
        return self.booster.predict(
            xgb.DMatrix(x), iteration_range=(0, self.best_iteration + 1), pred_contribs=True
        )

    @functools.cached_property
    def shap_tables(self) -> TreeShap | None:
        """The booster's tabulated TreeSHAP, built on first use (None: a model it does not
        cover)."""
        return tree_shap(self.booster, self.best_iteration + 1)


def stack_boosters(models: list[BoostedModel]) -> Forest | None:
    """`models` as one `Forest` whose output k is model k's `raw_score`, so one compiled call
    predicts them all (an uplift model asks a dozen boosters per cart); None when one of them
    cannot be stacked: an encoding unlike the first's, a calibrator, or a booster `forest` does
    not cover."""
    first = models[0]
    if any(m.calibrator is not None or not m.encodes_like(first) for m in models):
        return None
    return forest([(m.booster, m.best_iteration + 1) for m in models])


def fit_boosted_model(
    train: pd.DataFrame,
    y_train: np.ndarray,
    valid: pd.DataFrame,
    y_valid: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
    calibrate: bool = True,
) -> BoostedModel:
    """Train on `train`, stop early and calibrate (isotonic) on `valid`."""
    model = encoder_for(train, valid, numeric, categorical)
    dtrain = xgb.DMatrix(model.matrix(train), label=y_train, feature_names=model.features)
    dvalid = xgb.DMatrix(model.matrix(valid), label=y_valid, feature_names=model.features)
    booster = xgb.train(
        {
            "objective": params.objective,
            "eval_metric": "logloss" if params.objective.startswith("binary:") else "rmse",
            "tree_method": "hist",
            "max_depth": params.max_depth,
            "eta": params.learning_rate,
            "min_child_weight": params.min_child_weight,
            "subsample": params.subsample,
            "colsample_bytree": params.colsample_bytree,
            "lambda": params.reg_lambda,
            "seed": params.seed,
            "nthread": params.nthread,
        },
        dtrain,
        num_boost_round=params.n_estimators,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    model.booster, model.best_iteration = booster, int(booster.best_iteration)
    if calibrate:
        calibrate_on(model, valid, y_valid)
    return model


def encoder_for(
    train: pd.DataFrame, valid: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> BoostedModel:
    """The encoding a model trained on `train` and `valid` uses (categories seen in either), with
    an empty booster: `matrix` encodes rows for any trainer."""
    categories = {
        c: sorted(map(str, pd.concat([train[c], valid[c]]).dropna().unique())) for c in categorical
    }
    return BoostedModel(
        booster=xgb.Booster(),
        calibrator=None,
        features=[*numeric, *categorical],
        categories=categories,
    )


def calibrate_on(model: BoostedModel, valid: pd.DataFrame, y_valid: np.ndarray) -> None:
    """Isotonic calibration of the model's raw probabilities on `valid`."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(np.asarray(model.raw_score(valid), dtype=float), y_valid)
    model.calibrator = iso


def fit_logistic_baseline(train: pd.DataFrame, y_train: np.ndarray, numeric: list[str]) -> Any:
    """The baseline the risk model must beat: standardised logistic regression, nulls as medians."""
    medians = train[numeric].median()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pipe.fit(train[numeric].fillna(medians).to_numpy(dtype=float), y_train)
    pipe.medians_ = medians  # type: ignore[attr-defined]
    return pipe


def baseline_proba(pipe: Any, frame: pd.DataFrame, numeric: list[str]) -> np.ndarray:
    return pipe.predict_proba(frame[numeric].fillna(pipe.medians_).to_numpy(dtype=float))[:, 1]


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def risk_metrics(y: np.ndarray, p: np.ndarray, value: np.ndarray | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log-loss, Brier, calibration error, and the top decile's lift, capture and
    share of the expected lost revenue (value of positives) it captures."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    order = np.argsort(-p, kind="stable")
    top = order[: max(1, int(round(0.1 * len(p))))]
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": calibration_error(y, p),
        "base_rate": float(y.mean()),
        "top_decile_lift": float(y[top].mean() / max(y.mean(), 1e-12)),
        "top_decile_capture": float(y[top].sum() / max(y.sum(), 1)),
    }
    if value is not None:
        v = np.asarray(value, dtype=float) * y
        out["top_decile_lost_revenue_captured"] = float(v[top].sum() / max(v.sum(), 1e-12))
    return out


def reason_codes(
    model: BoostedModel, frame: Rows, k: int = 3, matrix: np.ndarray | None = None
) -> list[list[str]]:
    """The k features pushing each row's risk up the most (positive SHAP contributions)."""
    contrib = model.contributions(frame, matrix)[:, :-1]
    top = np.argsort(-contrib, axis=1)[:, :k]
    names = np.array(model.features)
    return [[str(names[j]) for j in row if contrib[i, j] > 0] for i, row in enumerate(top)]


def time_split(dates: pd.Series, valid_share: float = 0.2, test_share: float = 0.2) -> np.ndarray:
    """Assign 'train' / 'valid' / 'test' by day: the latest days test, the ones before validate."""
    days = np.sort(pd.to_datetime(dates).dt.normalize().unique())
    n = len(days)
    if n < 3:
        raise ValueError(f"a time-based split needs at least 3 days of labelled carts, got {n}")
    n_test = max(1, int(round(test_share * n)))
    n_valid = max(1, int(round(valid_share * n)))
    test_from, valid_from = days[n - n_test], days[n - n_test - n_valid]
    d = pd.to_datetime(dates).dt.normalize().to_numpy()
    return np.where(d >= test_from, "test", np.where(d >= valid_from, "valid", "train"))


# The blocking gates a trained risk model must pass to become the challenger (Dagster check names).
TRAINING_GATES: tuple[str, ...] = (
    "abandonment_model_roc_auc_above_floor",
    "abandonment_model_pr_auc_above_floor",
    "abandonment_model_calibrated",
    "abandonment_model_no_worse_than_global",
)


@dataclass(frozen=True)
class TrainingBounds:
    """What a trained risk model must reach on its test window."""

    min_roc_auc: float = 0.75
    min_pr_auc: float = 0.45
    max_calibration_error: float = 0.05
    global_tolerance: float = 0.01  # ROC-AUC it may lose against `global` on the same carts


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict and what it observed."""

    passed: bool
    observed: dict[str, Any]


def training_gates(
    metrics: dict[str, float], incumbent_auc: float | None, bounds: TrainingBounds
) -> dict[str, GateOutcome]:
    """The verdict of every training gate on the test-window `metrics` (`risk_metrics`), with
    `incumbent_auc` the `global` version's ROC-AUC on the same carts (None: no global yet)."""
    auc, pr, cal = metrics["roc_auc"], metrics["pr_auc"], metrics["calibration_error"]
    return dict(
        zip(
            TRAINING_GATES,
            (
                GateOutcome(
                    auc >= bounds.min_roc_auc, {"test_roc_auc": auc, "floor": bounds.min_roc_auc}
                ),
                GateOutcome(
                    pr >= bounds.min_pr_auc, {"test_pr_auc": pr, "floor": bounds.min_pr_auc}
                ),
                GateOutcome(
                    cal <= bounds.max_calibration_error,
                    {"calibration_error": cal, "bound": bounds.max_calibration_error},
                ),
                GateOutcome(
                    incumbent_auc is None or auc >= incumbent_auc - bounds.global_tolerance,
                    {
                        "test_roc_auc": auc,
                        "global_test_roc_auc": "no global"
                        if incumbent_auc is None
                        else incumbent_auc,
                        "tolerance": bounds.global_tolerance,
                    },
                ),
            ),
            strict=True,
        )
    )
