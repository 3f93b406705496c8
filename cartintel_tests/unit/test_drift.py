"""The drift judgement (`column_drift`, scipy's distances with Evidently's thresholds) is the
one Evidently's public data-drift report makes: the same scores and flags for every column; and
the report saved beside it is the preset's page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cartintel_assets.monitoring.drift import (
    MONITORED_CATEGORICAL,
    MONITORED_NUMERIC,
    DriftOptions,
    _run_report,
    column_drift,
    compare,
)


def _frame(n: int, rng: np.random.Generator, shift: float = 0.0, mix: float = 0.0) -> pd.DataFrame:
    """Monitored columns; `shift` moves the first numeric column by that many standard
    deviations, `mix` moves that share of the first categorical column to a new value."""
    data: dict[str, object] = {c: rng.normal(0.0, 1.0, n) for c in MONITORED_NUMERIC}
    data[MONITORED_NUMERIC[0]] = rng.normal(shift, 1.0, n)
    for c in MONITORED_CATEGORICAL:
        data[c] = rng.choice(list("abcd"), n)
    first = np.asarray(data[MONITORED_CATEGORICAL[0]], dtype=object)
    first[rng.random(n) < mix] = "new"
    data[MONITORED_CATEGORICAL[0]] = first
    return pd.DataFrame(data)


def test_column_drift_is_the_presets_judgement(tmp_path: Path) -> None:
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)
    reference, current = _frame(3000, rng), _frame(1200, rng, shift=1.0, mix=0.95)
    # the drifted columns and a few steady ones of each kind (the preset's cost is per column)
    numeric, categorical = list(MONITORED_NUMERIC[:5]), list(MONITORED_CATEGORICAL[:3])
    options = DriftOptions()
    result = column_drift(reference, current, numeric, categorical, options)
    assert result.drifted == [MONITORED_NUMERIC[0], MONITORED_CATEGORICAL[0]]
    assert result.share == 2 / (len(numeric) + len(categorical))
    assert result.snapshot is None

    # the full preset, per-column ValueDrift tests included: the same scores and flags
    preset = DataDriftPreset(
        columns=numeric + categorical,
        method=options.method,
        cat_method=options.cat_method,
        threshold=options.threshold,
        drift_share=options.max_drift_share,
    )
    raw = _run_report([preset], reference, current, numeric, categorical).dict()
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in raw["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    failed = {
        t["metric_config"]["params"]["column"]
        for t in raw["tests"]
        if t["metric_config"]["params"].get("type", "").endswith("ValueDrift")
        and str(getattr(t["status"], "value", t["status"])) == "FAIL"
    }
    assert set(result.drifted) == failed
    assert scores.keys() == result.scores.keys()
    assert all(abs(scores[c] - result.scores[c]) < 1e-12 for c in scores)

    # a reported comparison judges the same, and its page is the preset's drift table
    reported = compare(reference, current, numeric, categorical, options)
    assert (reported.drifted, reported.scores) == (result.drifted, result.scores)
    page = reported.save_html(tmp_path / "drift.html").read_text()
    assert "Drift is detected for 25.0% of columns (2 out of 8)." in page
    assert "Dataset Drift is detected." in page
    assert reported.snapshot.dict()["tests"][0]["status"] == "FAIL"
    # and a clean partition's page says so, its test passing (as the check does)
    clean = compare(reference, _frame(1200, rng), numeric, categorical, options)
    assert clean.drifted == []
    page = clean.save_html(tmp_path / "clean.html").read_text()
    assert "Dataset Drift is NOT detected." in page
    assert clean.snapshot.dict()["tests"][0]["status"] == "SUCCESS"
    assert page.count('"title": "DATA DISTRIBUTION"') == len(numeric) + len(categorical)
