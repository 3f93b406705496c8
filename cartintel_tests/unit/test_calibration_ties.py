"""The calibrated probability keeps the booster's ranking: isotonic steps do not tie carts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from cartintel_assets.models.abandonment import TIE_BREAK, XGBParams, fit_boosted_model


def test_calibration_keeps_the_raw_ranking_and_the_calibrated_level() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=4000) > 0.8).astype(int)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    fit, valid, test = frame.iloc[:2400], frame.iloc[2400:3200], frame.iloc[3200:]
    model = fit_boosted_model(
        fit, y[:2400], valid, y[2400:3200], ["a", "b", "c", "d"], [], XGBParams(n_estimators=80)
    )
    raw = np.asarray(model.raw_score(test), dtype=float)
    p = model.predict_proba(test)
    iso = model.calibrator
    assert isinstance(iso, IsotonicRegression)
    plain = iso.predict(raw)
    assert len(np.unique(plain)) < len(np.unique(raw)) / 2  # the isotonic steps tie many carts
    assert len(np.unique(p)) == len(np.unique(raw))  # ... which the raw score ranks apart
    assert np.all(np.diff(p[np.argsort(raw, kind="stable")]) >= 0)  # monotone in the raw score
    assert np.abs(p - plain).max() <= TIE_BREAK  # the calibrated level does not move
    y_test = y[3200:]
    assert roc_auc_score(y_test, p) == roc_auc_score(y_test, raw) > roc_auc_score(y_test, plain)
