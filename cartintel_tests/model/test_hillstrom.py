"""The uplift learners' real-data floor: Hillstrom's randomised e-mail experiment (MineThatData,
2008), women's e-mail vs no e-mail on `visit`, stratified 5-fold cross-fitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartintel_assets.models.hillstrom import hillstrom_floor, load_hillstrom, random_qini


@pytest.mark.realdata
def test_hillstrom_womens_email_floor(shared_data: Path) -> None:
    """Published: uplift@30 % = 0.0661 (scikit-uplift tutorial, by group); tuned S/T-learners
    reach a Qini coefficient of ~0.06-0.07 (scikit-uplift's normalisation, which ours follows).
    Measured here: X-learner uplift@30 % 0.072, Qini 0.054 [0.040, 0.069]; a random score 0.00."""
    frame = load_hillstrom(shared_data)
    assert frame["treatment"].value_counts().to_dict() == {
        "womens_email": 21387,
        "mens_email": 21307,
        "control": 21306,
    }
    result = hillstrom_floor(frame, "womens_email", "x-learner")
    r = result.report
    print("\n", r.round(4).to_dict())
    assert r["uplift_at_30"] >= 0.060
    assert r["ate"] == pytest.approx(0.0452, abs=0.001)  # 0.1514 - 0.1062, the published arms
    random = random_qini(frame, "womens_email")
    assert abs(random) < 0.015
    assert r["qini_lo"] > random + 0.02  # clearly above random: the whole interval
