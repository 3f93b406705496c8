"""Off-policy evaluation: what a candidate policy would have earned, estimated from logged
decisions, with bootstrap intervals. No Dagster import.

A policy gives each logged cart one action (an arm, or none). Its value is the total
incremental margin over giving nobody anything. Two estimators, as in Open Bandit Pipeline
(Saito et al. 2021):
- SNIPS, self-normalised inverse propensity scoring: the realised margin of the carts whose
  logged arm is the one the policy picks, weighted by 1 / propensity and normalised by the sum of
  those weights (no model; unbiased only asymptotically, low variance).
- DR, doubly robust (Dudík et al. 2011): a model's expected margin for the policy's action,
  corrected by the weighted residual where the logged arm agrees. Unbiased when the propensities
  are right, whatever the model's error; lower variance when the model is good.
Propensities are the logged ones (`propensity`: the chance the logged arm had of being chosen)
or, for a log without them, each arm's share of the log (a uniformly randomised log).
Intervals: the 2.5th and 97.5th percentiles over carts resampled with replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import NONE
from cartintel_assets.models.uplift import CONTROL, logged_propensity

ESTIMATORS = ("dr", "snips")


@dataclass(frozen=True)
class PolicyValue:
    """An off-policy estimate of a policy's total incremental margin on the logged carts."""

    estimator: str
    value: float
    lo: float  # 95 % bootstrap interval
    hi: float
    carts: int
    matched: int  # carts whose logged arm is the policy's action (they carry the evidence)
    # where the policy and what it is compared with (nothing, or `against`) differ: the smaller
    # of the two sides' effective numbers of logged carts (Kish, over the importance weights of
    # the carts whose logged arm is that side's). A few heavily weighted carts make an estimate
    # and its bootstrap interval unreliable, however narrow the interval looks.
    support: float = float("nan")


def propensities(log: pd.DataFrame) -> np.ndarray:
    """`models.uplift.logged_propensity` of a log: its `propensity` column when it has one, else
    each arm's share of the log."""
    logged = log["propensity"].to_numpy() if "propensity" in log else None
    return logged_propensity(log["treatment"].to_numpy(), logged)


def _as_arms(actions: np.ndarray) -> np.ndarray:
    actions = np.asarray(actions, dtype=object)
    return np.where(actions == NONE, CONTROL, actions)


def _per_cart(
    estimator: str,
    choice: np.ndarray,
    logged: np.ndarray,
    propensity: np.ndarray,
    realised: np.ndarray,
    predicted: pd.DataFrame | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cart, the terms whose (weighted) sums give the policy's value: numerator and weight
    (the value is n * sum(numerator) / sum(weight) for SNIPS, sum(numerator) for DR)."""
    hit = (logged == choice).astype(float)
    w = hit / propensity
    if estimator == "snips":
        return w * realised, w
    if predicted is None:
        raise ValueError("the doubly robust estimator needs the model's predicted margins")
    cols = np.array([predicted.columns.get_loc(c) for c in choice])
    m_hat = predicted.to_numpy(dtype=float)[np.arange(len(choice)), cols]
    logged_cols = np.array([predicted.columns.get_loc(c) for c in logged])
    m_logged = predicted.to_numpy(dtype=float)[np.arange(len(choice)), logged_cols]
    return m_hat + w * (realised - m_logged), np.ones(len(choice))


def greedy_policy(margins: pd.DataFrame) -> np.ndarray:
    """Per cart, the arm with the highest expected margin when it beats no intervention, else
    none (`margins`: `economics.expected_margins`, a model's or the truth's: the oracle)."""
    gain = margins.drop(columns=CONTROL).sub(margins[CONTROL], axis=0)
    return np.where(gain.max(axis=1) > 0, gain.idxmax(axis=1), NONE).astype(object)


def true_value(actions: np.ndarray, margins: pd.DataFrame) -> float:
    """A policy's total incremental margin under known expected margins (on the simulator: the
    truth the estimates are judged against)."""
    arms = _as_arms(actions)
    cols = [margins.columns.get_loc(a) for a in arms]
    chosen = margins.to_numpy(dtype=float)[np.arange(len(margins)), cols]
    return float((chosen - margins[CONTROL].to_numpy(dtype=float)).sum())


def off_policy_value(
    actions: np.ndarray,
    log: pd.DataFrame,
    realised: np.ndarray,
    predicted: pd.DataFrame | None = None,
    estimator: str = "dr",
    bootstrap: int = 500,
    seed: int = 0,
    against: np.ndarray | None = None,
) -> PolicyValue:
    """The total incremental margin of giving each logged cart `actions[i]` instead of nothing
    (or, with `against`, instead of another policy's actions: a paired comparison, whose
    interval is narrower than the two values' apart).

    `log`: the logged carts with `treatment` (the logged arm; `control` for none) and, if logged,
    `propensity`. `realised`: each cart's realised margin under its logged arm. `predicted`
    (DR only): the model's expected margin per cart under every arm and control, one column
    each."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    n = len(log)
    if n == 0 or len(actions) != n or len(realised) != n:
        raise ValueError(
            f"{len(actions)} actions and {len(realised)} outcomes for {n} logged carts"
        )
    logged = log["treatment"].to_numpy(dtype=object)
    p = propensities(log)
    choice = _as_arms(actions)
    num_pi, w_pi = _per_cart(estimator, choice, logged, p, realised, predicted)
    other = np.full(n, CONTROL, dtype=object) if against is None else _as_arms(against)
    num_0, w_0 = _per_cart(estimator, other, logged, p, realised, predicted)

    def value(weights: np.ndarray) -> np.ndarray:
        """Estimates for each row of resampling counts (shape B x n); a row of ones: the log."""
        if estimator == "dr":
            return weights @ (num_pi - num_0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n * ((weights @ num_pi) / (weights @ w_pi) - (weights @ num_0) / (weights @ w_0))

    point = float(value(np.ones((1, n)))[0])
    matched = int((logged == choice).sum())
    differ = choice != other
    support = min(_kish(((logged == side) & differ) / p) for side in (choice, other))
    if bootstrap == 0:  # the estimate alone (e.g. to compare many candidate policies)
        return PolicyValue(estimator, point, np.nan, np.nan, n, matched, support)
    rng = np.random.default_rng(seed)
    draws = value(rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float))
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return PolicyValue(estimator, point, float(lo), float(hi), n, matched, support)


def _kish(weights: np.ndarray) -> float:
    """Kish's effective sample size of importance weights (0 when none is positive)."""
    total = float(weights.sum())
    return total**2 / float((weights**2).sum()) if total > 0 else 0.0


@dataclass(frozen=True)
class TargetingGain:
    """What a policy's targeting adds over handing out its actions at random, and how often a
    random handing-out of the same actions does as well on the same log (a permutation test)."""

    value: float
    null_95: float  # the 95th percentile of the gain of random allocations of the same actions
    p_value: float  # share of random allocations gaining at least as much


def targeting_gain(
    actions: np.ndarray,
    log: pd.DataFrame,
    realised: np.ndarray,
    predicted: pd.DataFrame,
    permutations: int = 500,
    seed: int = 0,
) -> TargetingGain:
    """What a policy's targeting adds: its doubly robust value minus the expected value of
    handing out the same actions in the same proportions to carts at random, cart by cart.

    Per cart, Γ(a) is the DR estimate of action a's margin over no intervention; the gain is
    sum_i [Γ_i(π_i) - sum_a f_a Γ_i(a)], f_a the share of carts π gives a. A policy whose
    targeting carries no information gains 0 in expectation, whatever its actions are worth on
    average, but one allocation can be lucky on one log; so the gain is compared with the gains
    of `permutations` random allocations of the same actions on the same log."""
    n = len(log)
    logged = log["treatment"].to_numpy(dtype=object)
    p = propensities(log)
    choice = _as_arms(actions)
    arms = list(predicted.columns)
    base, _ = _per_cart("dr", np.full(n, CONTROL, dtype=object), logged, p, realised, predicted)
    gains = np.column_stack(
        [
            _per_cart("dr", np.full(n, a, dtype=object), logged, p, realised, predicted)[0] - base
            for a in arms
        ]
    )
    col = np.array([arms.index(c) for c in choice])
    expected = float((gains @ (np.bincount(col, minlength=len(arms)) / n)).sum())
    point = float(gains[np.arange(n), col].sum()) - expected
    rng = np.random.default_rng(seed)
    rows = np.arange(n)
    null = np.array(
        [gains[rows, col[rng.permutation(n)]].sum() - expected for _ in range(permutations)]
    )
    return TargetingGain(
        value=point,
        null_95=float(np.percentile(null, 95)),
        p_value=float((1 + (null >= point).sum()) / (1 + permutations)),
    )
