"""Multi-treatment uplift: how much each intervention changes the chance that an abandoned cart is
bought within 7 days, learnt from the randomised intervention log. No Dagster import.

Two meta-learners on XGBoost, one per idea:
- T-learner: one outcome model per arm; effect = mu_arm(x) - mu_control(x).
- X-learner (Kuenzel et al. 2019): outcome models impute each unit's effect (treated:
  y - mu_control(x); control: mu_arm(x) - y), two effect models regress those imputations, and
  their predictions are blended by the arm's share g: tau = g * tau_control + (1 - g) * tau_arm.
- DR-learner (Kennedy 2023): outcome models fitted on one half of the rows predict the other
  half, and each row's doubly robust pseudo-outcome per arm,
  mu_arm - mu_control + [T=arm] (y - mu_arm) / e_arm - [T=control] (y - mu_control) / e_control,
  is regressed on the features. e is the logged propensity of the row's arm (the `propensity`
  column of a log written by an exploring policy) or the arm's share of a randomised log, so it
  learns from a shop's own logged decisions, not only from a blanket experiment.
Evaluation is out-of-fold (cross-fitting), so every logged cart is scored by a model that did
not see it; the learner with the higher mean Qini is chosen, then refit on the whole log.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from cartintel_assets.contracts.schema import TREATMENTS
from cartintel_assets.features.session_features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    compute_session_facts,
)
from cartintel_assets.models.abandonment import (
    BoostedModel,
    Rows,
    XGBParams,
    fit_boosted_model,
    stack_boosters,
)
from cartintel_assets.models.forest import FOREST_ROWS, Forest
from cartintel_assets.models.segmentation import SegmentationModel
from cartintel_assets.models.uplift_metrics import (
    bootstrap_interval,
    qini_auc_score,
    uplift_at_k,
    uplift_auc_score,
)

CONTROL = TREATMENTS[0]
ARMS: tuple[str, ...] = TREATMENTS[1:]
# Never inputs for targeting: attributes that are protected, or proxies for them, so no offer
# depends on where someone lives or what device (a proxy for income) they shop on.
TARGETING_EXCLUDED: dict[str, str] = {
    "region": "proxy for nationality and ethnicity",
    "device": "proxy for income",
}
# Small arms (hundreds of carts each): shallow, strongly regularised trees.
UPLIFT_PARAMS = XGBParams(
    max_depth=3,
    learning_rate=0.05,
    n_estimators=300,
    min_child_weight=10.0,
    subsample=0.8,
    colsample_bytree=0.8,
    reg_lambda=5.0,
    early_stopping_rounds=30,
)


_LOG_SQL = """
SELECT i.assignment_id, i.treatment, i.converted_7d, i.assigned_at, i.chosen_by, i.propensity,
       f.*
FROM raw_interventions i LEFT JOIN session_features f USING (session_id)
ORDER BY i.assigned_at, i.assignment_id
"""


# An abandoned-cart nudge goes out after the session, so besides the point-in-time features (cut
# at checkout) the uplift model may use what the whole session showed: a coupon tried at
# checkout, the shipping quote seen, how long the shopper stayed.
SESSION_FACTS: tuple[str, ...] = (
    "session_coupon_attempts",
    "session_reached_checkout",
    "session_saw_shipping_quote",
    "session_events",
    "session_seconds",
)


def session_facts(
    con: duckdb.DuckDBPyConnection, day: date | None = None, events: str = "raw_events"
) -> pd.DataFrame:
    """SESSION_FACTS and the end time of every session in table `events` (of one day, or of all
    days, read a day at a time); `features.compute_session_facts` computes them, for the
    scoring service too."""
    days = (
        [day]
        if day is not None
        else [r[0] for r in con.execute(f"SELECT DISTINCT partition_date FROM {events}").fetchall()]
    )
    parts = []
    for d in sorted(days):
        ev = con.sql(
            f"SELECT session_id, epoch_us(ts) AS ts, event_type FROM {events}"
            " WHERE partition_date = $day",
            params={"day": d},
        ).fetchnumpy()
        parts.append(pd.DataFrame(compute_session_facts(ev)))
    if not parts:
        empty = {k: np.array([], dtype=object) for k in ("session_id", "ts", "event_type")}
        return pd.DataFrame(compute_session_facts(empty))
    out = pd.concat(parts, ignore_index=True)
    out["session_ended_at"] = pd.to_datetime(out["session_ended_at"], unit="us")
    return out


def intervention_log(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, int]:
    """The randomised log joined to each cart's point-in-time features and session facts, and
    how many logged carts have no feature row (they cannot be learnt from; counted, never
    hidden)."""
    joined = con.execute(_LOG_SQL).df()
    missing = joined["session_id"].isna()
    log = joined[~missing].reset_index(drop=True)
    return log.merge(session_facts(con), on="session_id", how="left"), int(missing.sum())


def targeting_features() -> tuple[list[str], list[str]]:
    """The numeric and categorical features an uplift model may use: the point-in-time features
    without protected proxies, plus the session facts."""
    num = [f for f in NUMERIC_FEATURES if f not in TARGETING_EXCLUDED] + list(SESSION_FACTS)
    cat = [f for f in CATEGORICAL_FEATURES if f not in TARGETING_EXCLUDED]
    return num, cat


def _fit(
    frame: pd.DataFrame,
    y: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams,
    regression: bool = False,
) -> BoostedModel:
    """One base learner: 80 % fits, 20 % stops the boosting early."""
    idx = np.arange(len(frame))
    fit_idx, stop_idx = train_test_split(idx, test_size=0.2, random_state=params.seed)
    p = replace(params, objective="reg:squarederror" if regression else "binary:logistic")
    return fit_boosted_model(
        frame.iloc[fit_idx],
        y[fit_idx],
        frame.iloc[stop_idx],
        y[stop_idx],
        numeric,
        categorical,
        p,
        calibrate=False,
    )


# the effect models each learner saves per arm, by file name
_EFFECT_FILES: dict[str, tuple[str, ...]] = {"x-learner": ("tau1", "tau0"), "dr-learner": ("tau",)}


@dataclass
class UpliftModel:
    """Per-arm effect on the 7-day conversion of an abandoned cart, and the control baseline."""

    learner: str
    arms: list[str]
    outcome: dict[str, BoostedModel]  # mu per arm, control included
    # X: (tau1, tau0); DR: (tau,)
    effect: dict[str, tuple[BoostedModel, ...]] = field(default_factory=dict)
    weight: dict[str, float] = field(default_factory=dict)  # X: g, the arm's share of arm+control
    # per arm (intercept, slope) mapping raw to calibrated effects, fitted out of fold
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.outcome[CONTROL].features

    def baseline(self, frame: Rows) -> np.ndarray:
        """Probability of buying the cart within 7 days without any intervention."""
        return self.predict(frame)[0]

    def effects(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predicted change in that probability per arm (one column per arm)."""
        return pd.DataFrame(self.predict(frame)[1], index=frame.index)

    @property
    def learners(self) -> list[BoostedModel]:
        """Every booster a prediction asks: the control outcome first, then per arm its effect
        models (X- and DR-learner) or its outcome model (T-learner)."""
        if self.effect:
            return [self.outcome[CONTROL], *(m for arm in self.arms for m in self.effect[arm])]
        return [self.outcome[a] for a in [CONTROL, *self.arms]]

    @functools.cached_property
    def _stacked(self) -> Forest | None:
        return stack_boosters(self.learners)

    def use_threads(self, n: int) -> None:
        """XGBoost's threads, for the predictions it makes (many rows, or learners that cannot be
        stacked); the stack, which needs none, is built now rather than at the first prediction
        (a service's first request should not wait for it)."""
        for m in [*self.outcome.values(), *(m for pair in self.effect.values() for m in pair)]:
            m.booster.set_param({"nthread": n})
        self._stacked  # noqa: B018  (builds it)

    def use_segmentation(self, segmentation: SegmentationModel | None) -> None:
        """Every booster computes its segment features with `segmentation` from now on (the one
        the training frame's were computed with; see `BoostedModel.segmentation`)."""
        for m in [*self.outcome.values(), *(m for pair in self.effect.values() for m in pair)]:
            m.segmentation = segmentation
        self.__dict__.pop("_stacked", None)  # stacking compares encodings

    def predict(self, frame: Rows) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The baseline and the effect per arm, the rows encoded once and every learner asked in
        one compiled call (`stack_boosters`; one call per learner if they cannot be stacked)."""
        control = self.outcome[CONTROL]
        x = control.matrix(frame)  # encoded once for every learner
        stacked = self._stacked if len(x) < FOREST_ROWS else None  # many rows: XGBoost's threads
        if stacked is not None:
            column = dict(zip(map(id, self.learners), stacked.predict(x).T, strict=True))

        def proba(m: BoostedModel) -> np.ndarray:
            if stacked is not None:
                return column[id(m)]
            return m.predict_proba(frame, x if m.encodes_like(control) else None)

        base = np.clip(proba(control), 0.0, 1.0)
        out = {}
        for arm in self.arms:
            if self.learner == "x-learner":
                tau1, tau0 = (proba(m) for m in self.effect[arm])
                g = self.weight[arm]
                tau = g * tau0 + (1 - g) * tau1
            elif self.learner == "dr-learner":
                tau = proba(self.effect[arm][0])
            else:
                tau = proba(self.outcome[arm]) - base
            if arm in self.calibration:
                a, b = self.calibration[arm]
                tau = a + b * tau
            # an effect cannot push the probability outside [0, 1]
            out[arm] = np.clip(tau, -base, 1 - base)
        return base, out

    def save(self, folder: Path) -> None:
        """Boosters as XGBoost JSON and the structure as JSON; no pickle."""
        folder.mkdir(parents=True, exist_ok=True)
        for arm, m in self.outcome.items():
            m.save(folder / f"mu_{arm}")
        for arm, models in self.effect.items():
            for name, m in zip(_EFFECT_FILES[self.learner], models, strict=True):
                m.save(folder / f"{name}_{arm}")
        meta = {
            "learner": self.learner,
            "arms": self.arms,
            "weight": self.weight,
            "calibration": self.calibration,
        }
        (folder / "uplift_model.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> UpliftModel:
        meta = json.loads((folder / "uplift_model.json").read_text())
        arms = list(meta["arms"])
        outcome = {a: BoostedModel.load(folder / f"mu_{a}") for a in [CONTROL, *arms]}
        names = _EFFECT_FILES.get(meta["learner"], ())
        effect = {
            a: tuple(BoostedModel.load(folder / f"{name}_{a}") for name in names)
            for a in arms
            if names
        }
        calibration = {a: (float(c[0]), float(c[1])) for a, c in meta["calibration"].items()}
        return cls(meta["learner"], arms, outcome, effect, dict(meta["weight"]), calibration)


def fit_t_learner(
    frame: pd.DataFrame,
    treatment: np.ndarray,
    y: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams = UPLIFT_PARAMS,
) -> UpliftModel:
    """One outcome model per arm (control included); the arms are the logged ones other than
    control (the storefront's in catalogue order, any others sorted)."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=int)
    present = set(np.unique(treatment)) - {CONTROL}
    arms = [a for a in ARMS if a in present] + sorted(present - set(ARMS))
    outcome = {
        a: _fit(frame[treatment == a], y[treatment == a], numeric, categorical, params)
        for a in [CONTROL, *arms]
    }
    return UpliftModel("t-learner", arms, outcome)


def fit_x_learner(
    frame: pd.DataFrame,
    treatment: np.ndarray,
    y: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams = UPLIFT_PARAMS,
) -> UpliftModel:
    """Outcome models, then per arm two effect models on the imputed effects, blended by g."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=int)
    t_model = fit_t_learner(frame, treatment, y, numeric, categorical, params)
    control = treatment == CONTROL
    xc, yc = frame[control], y[control]
    effect: dict[str, tuple[BoostedModel, ...]] = {}
    weight: dict[str, float] = {}
    for arm in t_model.arms:
        treated = treatment == arm
        xt, yt = frame[treated], y[treated]
        d1 = yt - t_model.outcome[CONTROL].predict_proba(xt)
        d0 = t_model.outcome[arm].predict_proba(xc) - yc
        effect[arm] = (
            _fit(xt, d1, numeric, categorical, params, regression=True),
            _fit(xc, d0, numeric, categorical, params, regression=True),
        )
        weight[arm] = float(treated.sum() / (treated.sum() + control.sum()))
    return UpliftModel("x-learner", t_model.arms, t_model.outcome, effect, weight)


def logged_propensity(treatment: np.ndarray, propensity: np.ndarray | None = None) -> np.ndarray:
    """Each row's chance of having been given its logged arm: the logged propensity, or where a
    row has none, the arm's share of the log (exact for a uniformly randomised log)."""
    arm = pd.Series(np.asarray(treatment))
    p = arm.map(arm.value_counts(normalize=True)).to_numpy(dtype=float)
    if propensity is not None:
        logged = np.asarray(propensity, dtype=float)
        p = np.where(np.isnan(logged), p, logged)
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError("logged propensities must be in (0, 1]: a chosen arm had no chance?")
    return p


def fit_dr_learner(
    frame: pd.DataFrame,
    treatment: np.ndarray,
    y: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    params: XGBParams = UPLIFT_PARAMS,
) -> UpliftModel:
    """Per arm, one effect model on the rows' doubly robust pseudo-outcomes; the outcome models
    behind them are cross-fitted over two halves (stratified by arm and outcome), so no row's
    pseudo-outcome uses a model that saw it. Propensities: `frame["propensity"]` if logged."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=int)
    frame = frame.reset_index(drop=True)
    e = logged_propensity(
        treatment, frame["propensity"].to_numpy() if "propensity" in frame else None
    )
    t_model = fit_t_learner(frame, treatment, y, numeric, categorical, params)
    mu = pd.DataFrame(0.0, index=frame.index, columns=[CONTROL, *t_model.arms])
    strata = pd.Series(treatment).astype(str) + "/" + pd.Series(y).astype(str)
    halves = StratifiedKFold(n_splits=2, shuffle=True, random_state=params.seed)
    for fit_idx, out_idx in halves.split(frame, strata):
        half = fit_t_learner(
            frame.iloc[fit_idx], treatment[fit_idx], y[fit_idx], numeric, categorical, params
        )
        part = frame.iloc[out_idx]
        for a in mu.columns:
            mu.loc[out_idx, a] = np.clip(half.outcome[a].predict_proba(part), 0.0, 1.0)
    control = treatment == CONTROL
    effect: dict[str, tuple[BoostedModel, ...]] = {}
    for arm in t_model.arms:
        treated = treatment == arm
        m1, m0 = mu[arm].to_numpy(), mu[CONTROL].to_numpy()
        psi = m1 - m0 + np.where(treated, (y - m1) / e, 0.0) - np.where(control, (y - m0) / e, 0.0)
        effect[arm] = (_fit(frame, psi, numeric, categorical, params, regression=True),)
    return UpliftModel("dr-learner", t_model.arms, t_model.outcome, effect)


LEARNERS: dict[str, Callable[..., UpliftModel]] = {
    "t-learner": fit_t_learner,
    "x-learner": fit_x_learner,
    "dr-learner": fit_dr_learner,
}


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold predictions of one learner for every logged cart."""

    learner: str
    effects: pd.DataFrame  # one column per arm
    baseline: np.ndarray


def cross_fit(
    frame: pd.DataFrame,
    treatment: np.ndarray,
    y: np.ndarray,
    learner: str,
    numeric: list[str],
    categorical: list[str],
    folds: int = 5,
    params: XGBParams = UPLIFT_PARAMS,
) -> CrossFit:
    """Predict each cart with a model fitted on the other folds (stratified by arm and outcome)."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=int)
    frame = frame.reset_index(drop=True)
    strata = pd.Series(treatment).astype(str) + "/" + pd.Series(y).astype(str)
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=params.seed)
    effects = pd.DataFrame(index=frame.index, dtype=float)
    baseline = np.zeros(len(frame))
    for fit_idx, out_idx in kfold.split(frame, strata):
        model = LEARNERS[learner](
            frame.iloc[fit_idx], treatment[fit_idx], y[fit_idx], numeric, categorical, params
        )
        part = frame.iloc[out_idx]
        for arm, tau in model.effects(part).items():
            effects.loc[out_idx, arm] = tau.to_numpy()
        baseline[out_idx] = model.baseline(part)
    return CrossFit(learner, effects, baseline)


def effect_calibration(
    fit: CrossFit, treatment: np.ndarray, y: np.ndarray, max_slope: float = 1.0
) -> dict[str, tuple[float, float]]:
    """Per arm, the line that maps out-of-fold predicted effects to realised ones.

    Raw meta-learner effects are noisy, and the carts a plan picks are those whose effect is
    overestimated most (the winner's curse), so margins computed from them overspend. Each arm's
    doubly robust pseudo-outcome (arm and control carts, known assignment shares) is regressed on
    the predicted effect; the slope is kept in [0, max_slope] (0: no ranking signal, every cart
    gets the arm's average effect)."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=float)
    out: dict[str, tuple[float, float]] = {}
    for arm in fit.effects.columns:
        m = (treatment == arm) | (treatment == CONTROL)
        tau = fit.effects[arm].to_numpy(dtype=float)[m]
        mu0 = fit.baseline[m]
        mu1 = np.clip(mu0 + tau, 0, 1)
        is_arm = treatment[m] == arm
        e = is_arm.mean()
        psi = tau + np.where(is_arm, (y[m] - mu1) / e, -(y[m] - mu0) / (1 - e))
        slope = float(np.cov(tau, psi)[0, 1] / max(np.var(tau, ddof=1), 1e-12))
        slope = float(np.clip(slope, 0.0, max_slope))
        out[arm] = (float(psi.mean() - slope * tau.mean()), slope)
    return out


def calibrated(fit: CrossFit, calibration: dict[str, tuple[float, float]]) -> CrossFit:
    """The cross-fit with its effects mapped through `calibration`."""
    effects = fit.effects.copy()
    for arm, (a, b) in calibration.items():
        effects[arm] = np.clip(a + b * effects[arm], -fit.baseline, 1 - fit.baseline)
    return CrossFit(fit.learner, effects, fit.baseline)


def uplift_report(
    effects: pd.DataFrame,
    treatment: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per arm against control: Qini coefficient and AUUC with bootstrap 95 % intervals, uplift
    among the top 10 % and 30 % by predicted effect, and the arm's size."""
    treatment, y = np.asarray(treatment), np.asarray(y, dtype=int)
    rows = []
    for arm in effects.columns:
        m = (treatment == arm) | (treatment == CONTROL)
        yy, tt = y[m], (treatment[m] == arm).astype(int)
        score = effects[arm].to_numpy(dtype=float)[m]
        if tt.sum() == 0 or (1 - tt).sum() == 0:
            continue
        q, q_lo, q_hi = bootstrap_interval(qini_auc_score, yy, score, tt, n_boot, seed=seed)
        a, a_lo, a_hi = bootstrap_interval(uplift_auc_score, yy, score, tt, n_boot, seed=seed)
        rows.append(
            {
                "arm": arm,
                "qini": q,
                "qini_lo": q_lo,
                "qini_hi": q_hi,
                "auuc": a,
                "auuc_lo": a_lo,
                "auuc_hi": a_hi,
                "uplift_at_10": uplift_at_k(yy, score, tt, 0.1),
                "uplift_at_30": uplift_at_k(yy, score, tt, 0.3),
                "ate": float(yy[tt == 1].mean() - yy[tt == 0].mean()),
                "n_arm": int(tt.sum()),
                "n_control": int((1 - tt).sum()),
            }
        )
    return pd.DataFrame(rows).set_index("arm")


def effect_error(predicted: pd.DataFrame, true: pd.DataFrame) -> pd.DataFrame:
    """Per arm: RMSE and mean absolute error of the predicted effects against the true ones,
    their correlation, and the mean of each (the simulator knows every cart's true effect)."""
    rows = []
    for arm in predicted.columns:
        p, t = predicted[arm].to_numpy(dtype=float), true[arm].to_numpy(dtype=float)
        rows.append(
            {
                "arm": arm,
                "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
                "mae": float(np.mean(np.abs(p - t))),
                "corr": float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 else 0.0,
                "mean_predicted": float(p.mean()),
                "mean_true": float(t.mean()),
            }
        )
    return pd.DataFrame(rows).set_index("arm")
