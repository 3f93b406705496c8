"""The DR-learner reads the logged propensities: on a log whose arm depends on the shopper (an
exploring policy, not a blanket experiment) it recovers the planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cartintel_assets.models.abandonment import XGBParams
from cartintel_assets.models.uplift import CONTROL, fit_dr_learner, logged_propensity

SMALL = XGBParams(max_depth=3, n_estimators=150, early_stopping_rounds=20, nthread=1)


def _confounded_log(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Shoppers with x > 0 are likelier to buy anyway and likelier to be e-mailed (80 % vs 20 %);
    the e-mail moves only them (+0.25): a naive arm comparison overstates its effect."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    noise = rng.normal(size=n)
    p_email = np.where(x > 0, 0.8, 0.2)
    emailed = rng.random(n) < p_email
    effect = np.where(x > 0, 0.25, 0.0)
    y = (rng.random(n) < 0.2 + 0.3 * (x > 0) + effect * emailed).astype(int)
    treatment = np.where(emailed, "reminder_email", CONTROL)
    frame = pd.DataFrame(
        {"x": x, "noise": noise, "propensity": np.where(emailed, p_email, 1 - p_email)}
    )
    return frame, treatment, y


def test_the_dr_learner_recovers_the_effect_from_a_confounded_log() -> None:
    frame, t, y = _confounded_log(12_000)
    naive = y[t != CONTROL].mean() - y[t == CONTROL].mean()
    assert naive > 0.3  # the arm comparison is far off the true mean effect of 0.125
    model = fit_dr_learner(frame, t, y, ["x", "noise"], [], SMALL)
    tau = model.effects(frame)["reminder_email"].to_numpy()
    x = frame["x"].to_numpy()
    # measured: mean 0.133, 0.209 where x > 0.2, 0.047 where x < -0.2; with the arm's share
    # of the log as its propensity instead (the logged ones ignored): 0.160, 0.234, 0.079
    assert abs(tau.mean() - 0.125) < 0.02
    assert tau[x < -0.2].mean() < 0.065
    assert tau[x > 0.2].mean() - tau[x < -0.2].mean() > 0.12  # planted: 0.25
    assert np.corrcoef(tau, x > 0)[0, 1] > 0.8


def test_propensities_must_give_the_logged_arm_a_chance() -> None:
    frame, t, y = _confounded_log(2_000)
    with pytest.raises(ValueError, match="no chance"):
        fit_dr_learner(frame.assign(propensity=0.0), t, y, ["x", "noise"], [], SMALL)
    shares = logged_propensity(np.array(["a", "a", "a", "b"]))
    np.testing.assert_allclose(shares, [0.75, 0.75, 0.75, 0.25])
