"""The real-data floor of the uplift learners: Kevin Hillstrom's MineThatData e-mail experiment
(2008; 64,000 customers randomised to a men's e-mail, a women's e-mail or none), through the
same learners and metrics as the storefront. No Dagster import.

Task (as in scikit-uplift's tutorial): treatment `Womens E-Mail` vs `No E-Mail`, outcome `visit`,
stratified 5-fold cross-fitting. Published reference: uplift@30 % = 0.0661 (scikit-uplift
tutorial, `strategy='by_group'`); tuned S/T-learners reach a Qini coefficient of about
0.06-0.07 in scikit-uplift's `qini_auc_score` normalisation, which `uplift_metrics` follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cartintel_assets.models.uplift import CONTROL, cross_fit, uplift_report

HILLSTROM_FILE = "hillstrom.csv"
HILLSTROM_ROWS = 64000
ARM_NAMES = {"No E-Mail": CONTROL, "Womens E-Mail": "womens_email", "Mens E-Mail": "mens_email"}
NUMERIC = ["recency", "history", "mens", "womens", "newbie"]
CATEGORICAL = ["history_segment", "zip_code", "channel"]


@dataclass(frozen=True)
class HillstromResult:
    """Out-of-fold metrics of one learner for one e-mail against no e-mail."""

    learner: str
    arm: str
    report: pd.Series  # the uplift_report row: qini with interval, auuc, uplift at 10/30 %, ate


def load_hillstrom(shared_data: Path) -> pd.DataFrame:
    """The 64,000 customers, with the arm renamed (control / womens_email / mens_email)."""
    path = Path(shared_data) / HILLSTROM_FILE
    frame = pd.read_csv(path)
    if len(frame) != HILLSTROM_ROWS or not {"segment", "visit"} <= set(frame.columns):
        raise ValueError(f"{path}: expected {HILLSTROM_ROWS} customers with segment and visit")
    unknown = set(frame["segment"]) - set(ARM_NAMES)
    if unknown:
        raise ValueError(f"{path}: unknown arms {sorted(unknown)}")
    return frame.assign(treatment=frame["segment"].map(ARM_NAMES))


def hillstrom_floor(
    frame: pd.DataFrame, arm: str, learner: str, folds: int = 5, n_boot: int = 100
) -> HillstromResult:
    """Cross-fitted uplift of `arm` vs no e-mail on `visit`, scored on every customer."""
    part = frame[frame["treatment"].isin([CONTROL, arm])].reset_index(drop=True)
    treatment, y = part["treatment"].to_numpy(), part["visit"].to_numpy(dtype=int)
    fit = cross_fit(part, treatment, y, learner, NUMERIC, CATEGORICAL, folds)
    report = uplift_report(fit.effects[[arm]], treatment, y, n_boot=n_boot)
    return HillstromResult(learner, arm, report.loc[arm])


def random_qini(frame: pd.DataFrame, arm: str, seed: int = 0) -> float:
    """Qini of a random score on the same rows: what 'clearly above random' is measured against."""
    from cartintel_assets.models.uplift_metrics import qini_auc_score

    part = frame[frame["treatment"].isin([CONTROL, arm])]
    rng = np.random.default_rng(seed)
    t = (part["treatment"] == arm).to_numpy(dtype=int)
    return qini_auc_score(part["visit"].to_numpy(), rng.random(len(part)), t)
