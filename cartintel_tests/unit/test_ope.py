"""Off-policy evaluation on a synthetic logged bandit whose true policy values are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartintel_assets.decisions.catalogue import NONE
from cartintel_assets.decisions.ope import (
    off_policy_value,
    propensities,
    targeting_gain,
    true_value,
)
from cartintel_assets.models.uplift import CONTROL

ARMS = (CONTROL, "a", "b", "c")


def bandit(
    n: int, seed: int, logging: np.ndarray | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n carts with a feature x; each arm's true expected margin depends on x (arm b helps only
    carts with x > 0). Arms are logged with `logging` probabilities (uniform by default)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    true = pd.DataFrame(
        {
            CONTROL: 10 + 6 * x,
            "a": 10 + 6 * x + 1.0,
            "b": 10 + 6 * x + 3.0 * (x > 0) - 2.0,
            "c": 10 + 6 * x - 0.5,
        }
    )
    probs = np.full((n, len(ARMS)), 1 / len(ARMS)) if logging is None else logging
    pick = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    logged = np.array(ARMS, dtype=object)[pick]
    mean = true.to_numpy()[np.arange(n), pick]
    log = pd.DataFrame({"x": x, "treatment": logged})
    if logging is not None:
        log["propensity"] = probs[np.arange(n), pick]
    log["realised"] = mean + rng.normal(scale=3.0, size=n)
    return log, true


def policies(log: pd.DataFrame) -> dict[str, np.ndarray]:
    n = len(log)
    return {
        "a to all": np.full(n, "a", dtype=object),
        "b where it helps": np.where(log["x"] > 0, "b", NONE).astype(object),
        "nothing": np.full(n, NONE, dtype=object),
        "c to half": np.where(np.arange(n) % 2 == 0, "c", NONE).astype(object),
    }


@pytest.mark.parametrize("estimator", ["dr", "snips"])
def test_estimates_cover_the_true_value_of_every_policy(estimator: str) -> None:
    log, true = bandit(20_000, seed=1)
    model = true + 0.7  # a biased model: DR stays unbiased through its correction
    covered, errors = [], []
    for name, actions in policies(log).items():
        est = off_policy_value(
            actions, log, log["realised"].to_numpy(), model, estimator=estimator, seed=3
        )
        truth = true_value(actions, true)
        assert est.carts == len(log) and est.lo <= est.value <= est.hi, name
        # without draws: the same estimate, no interval (the gate compares candidates so)
        alone = off_policy_value(
            actions, log, log["realised"].to_numpy(), model, estimator=estimator, bootstrap=0
        )
        assert alone.value == est.value and np.isnan(alone.lo) and np.isnan(alone.hi), name
        covered.append(est.lo <= truth <= est.hi)
        errors.append(abs(est.value - truth) / len(log))
    assert all(covered), (estimator, covered, errors)
    assert max(errors) < 0.2  # per cart, on a margin of ~10 ± 6 with noise 3


def test_doubly_robust_is_tighter_with_a_good_model_and_unbiased_with_a_bad_one() -> None:
    log, true = bandit(20_000, seed=2)
    actions = policies(log)["b where it helps"]
    truth = true_value(actions, true)
    r = log["realised"].to_numpy()
    snips = off_policy_value(actions, log, r, estimator="snips")
    good = off_policy_value(actions, log, r, true, estimator="dr")
    bad = off_policy_value(actions, log, r, true * 0.0, estimator="dr")  # predicts nothing
    assert good.hi - good.lo < 0.7 * (snips.hi - snips.lo)
    assert bad.lo <= truth <= bad.hi
    # the model alone would be far off; the correction brings the estimate back
    assert abs(bad.value - truth) < 0.05 * abs(truth) + 3 * (bad.hi - bad.lo) / 3.92


def test_logged_propensities_are_used_and_shares_would_be_biased() -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    x = rng.normal(size=n)
    # a logging policy that favoured arm b where it helps: shares alone misjudge that
    favour = np.where(x[:, None] > 0, [0.1, 0.1, 0.7, 0.1], [0.4, 0.2, 0.2, 0.2])
    log, true = bandit(n, seed=5, logging=favour)
    actions = policies(log)["a to all"]
    truth = true_value(actions, true)
    r = log["realised"].to_numpy()
    logged = off_policy_value(actions, log, r, estimator="snips")
    assert logged.lo <= truth <= logged.hi
    shares = off_policy_value(actions, log.drop(columns="propensity"), r, estimator="snips")
    assert not shares.lo <= truth <= shares.hi  # the same log read as uniform is biased


def test_support_counts_the_evidence_where_two_policies_differ() -> None:
    """On a log the plan decided (arm a to all, 0.25 % exploration per other arm), a policy that
    differs from it rests only on the explored carts: few, each weighted 400. Its support is
    their count (equal weights); on a uniformly randomised log it is thousands."""
    n = 20_000
    plan_log = np.tile([0.0025, 0.9925, 0.0025, 0.0025], (n, 1))
    log, _ = bandit(n, seed=6, logging=plan_log)
    r = log["realised"].to_numpy()
    p = policies(log)
    paired = off_policy_value(
        p["b where it helps"], log, r, estimator="snips", against=p["a to all"]
    )
    t, x = log["treatment"], log["x"]
    explored = int(((t == "b") & (x > 0)).sum() + ((t == CONTROL) & (x <= 0)).sum())
    assert 0 < explored < 200 and paired.support == pytest.approx(explored)
    uniform, _ = bandit(n, seed=6)
    wide = off_policy_value(
        p["b where it helps"],
        uniform,
        uniform["realised"].to_numpy(),
        estimator="snips",
        against=p["a to all"],
    )
    assert wide.support > 4_000  # a quarter of the carts on either side


def test_bad_inputs_are_refused() -> None:
    log, true = bandit(100, seed=0)
    r = log["realised"].to_numpy()
    with pytest.raises(ValueError, match="unknown estimator"):
        off_policy_value(np.full(100, NONE), log, r, true, estimator="ips")
    with pytest.raises(ValueError, match="needs the model"):
        off_policy_value(np.full(100, NONE), log, r, None, estimator="dr")
    with pytest.raises(ValueError, match="99 actions"):
        off_policy_value(np.full(99, NONE), log, r, true)
    with pytest.raises(ValueError, match="propensities must be in"):
        propensities(log.assign(propensity=0.0))


def test_targeting_gain_is_zero_for_random_targeting_and_positive_for_a_good_one() -> None:
    """The same actions in the same proportions: given to the carts they help, the gain beats
    every random allocation; given at random, it is one of them (p-values spread over (0, 1])."""
    log, true = bandit(20_000, seed=3)
    r = log["realised"].to_numpy()
    best = true.drop(columns=CONTROL).sub(true[CONTROL], axis=0).idxmax(axis=1).to_numpy()
    good = targeting_gain(best, log, r, true, permutations=200, seed=1)
    assert good.value > good.null_95 and good.p_value < 0.01
    rng = np.random.default_rng(4)
    found = [targeting_gain(rng.permutation(best), log, r, true, 200, 1) for _ in range(10)]
    print(good, *found, sep="\n")
    assert sum(v.p_value < 0.05 for v in found) <= 2
    assert abs(np.mean([v.value for v in found])) < good.value / 10
