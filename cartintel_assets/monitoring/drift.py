"""Drift of a scored partition against the reference of the model version that scored it, and the
realised performance once outcomes land.

Verdicts come from public APIs only: scipy's Wasserstein distance (normed by the reference's
standard deviation) for numbers and Jensen-Shannon distance for categories, with the thresholds
and the comparison (`>=`) of Evidently's stat tests of those names, which `test_drift` checks
against Evidently's public report. Evidently's `DataDriftPreset` report stays the evidence: it is
rendered (most of the cost of a comparison) for what drifted, or on request.

No Dagster import. The reference of a model version is built once, when the version is
trained: a fixed-size sample of the latest landed days (carts it did not learn from, most of them
not labelled yet) with the model's scores, and the features that already drift between its
training window and those days. Every later partition is compared with that same reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from cartintel_assets.features.session_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

# One value per daily partition by construction: comparing it with a week of reference is noise.
NOT_MONITORED: tuple[str, ...] = ("weekday",)
MONITORED_NUMERIC: tuple[str, ...] = tuple(c for c in NUMERIC_FEATURES if c not in NOT_MONITORED)
MONITORED_CATEGORICAL: tuple[str, ...] = CATEGORICAL_FEATURES
SCORE_COLUMN = "risk"
REFERENCE_ROWS = 5000
REFERENCE_DAYS = 3  # several days, so one day's shocks do not become the reference
# Evidently's default test flips from p-values to distances at 1,000 rows: always name the method.
DRIFT_METHOD = "wasserstein"  # normed by the reference's standard deviation
CATEGORICAL_DRIFT_METHOD = "jensenshannon"


@dataclass(frozen=True)
class DriftOptions:
    """How drift is measured and when a partition counts as drifted."""

    method: str = DRIFT_METHOD
    cat_method: str = CATEGORICAL_DRIFT_METHOD
    # A day's region-level shocks (a carrier a day late, a promotion) move single features of one
    # region by up to ~0.6 reference standard deviations on the simulator; a doubled shipping
    # cost moves that region's shipping cost by 1.2-2.
    threshold: float = 0.7
    max_drift_share: float = 0.0  # share of judged features that may drift (overall, any slice)
    score_threshold: float = 0.5
    min_slice_rows: int = 200  # smaller slices are reported, never judged


@dataclass
class DriftResult:
    """One Evidently comparison: per-column scores and flags, and the report to save (None when
    `column_drift` made the comparison without one)."""

    rows_current: int
    rows_reference: int
    scores: dict[str, float]
    drifted: list[str]
    share: float
    snapshot: Any = field(repr=False, default=None)

    def drifted_scores(self) -> dict[str, float]:
        return {c: round(self.scores[c], 4) for c in self.drifted}

    def save_html(self, path: Path) -> Path:
        if self.snapshot is None:
            raise ValueError("this comparison made no report (column_drift): use compare")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(path))
        return path


def reference_sample(
    features: pd.DataFrame, risk: np.ndarray, rows: int = REFERENCE_ROWS, seed: int = 0
) -> pd.DataFrame:
    """The reference a model version is monitored against: up to `rows` carts of the latest
    `REFERENCE_DAYS` landed days with the monitored features, the customer (for slices) and the
    model's score."""
    frame = features[["session_id", "customer_id", *MONITORED_NUMERIC, *MONITORED_CATEGORICAL]]
    frame = frame.assign(**{SCORE_COLUMN: np.asarray(risk, dtype=float)})
    if len(frame) > rows:
        frame = frame.sample(rows, random_state=seed)
    return frame.reset_index(drop=True)


def _typed(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = frame[numeric + categorical].copy()
    out[numeric] = out[numeric].astype(float)
    for c in categorical:
        out[c] = out[c].astype("string").fillna("missing").astype(object)
    return out


def _run_report(
    metrics: list[Any],
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> Any:
    """One Evidently report, with its tests, over the typed columns of both frames; returns its
    snapshot."""
    from evidently import DataDefinition, Dataset, Report

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Report(metrics, include_tests=True).run(
        Dataset.from_pandas(_typed(current, numeric, categorical), data_definition=definition),
        Dataset.from_pandas(_typed(reference, numeric, categorical), data_definition=definition),
    )


def _judged_columns(judged: list[str] | None, without: str = "") -> tuple[list[str], list[str]]:
    """The numeric and categorical monitored features to judge (default: all), minus `without`."""
    columns = judged if judged is not None else [*MONITORED_NUMERIC, *MONITORED_CATEGORICAL]
    numeric = [c for c in MONITORED_NUMERIC if c in columns]
    categorical = [c for c in MONITORED_CATEGORICAL if c in columns and c != without]
    return numeric, categorical


STAT_TESTS = ("wasserstein", "jensenshannon")


def wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> float:
    """First Wasserstein distance in units of the reference's standard deviation (at least
    0.001), as Evidently's `wasserstein` stat test measures it."""
    norm = max(float(np.std(reference)), 0.001)
    return float(wasserstein_distance(reference, current)) / norm


def jensenshannon_categories(reference: pd.Series, current: pd.Series) -> float:
    """Jensen-Shannon distance (natural log) between the category shares of both sides, over the
    categories either side has, as Evidently's `jensenshannon` stat test measures categories."""
    keys = sorted(set(reference.unique()) | set(current.unique()), key=str)
    ref = reference.value_counts().reindex(keys, fill_value=0).to_numpy() / len(reference)
    cur = current.value_counts().reindex(keys, fill_value=0).to_numpy() / len(current)
    return float(jensenshannon(ref, cur))


def _stat_test(method: str, categorical: bool) -> Any:
    if method not in STAT_TESTS:
        raise ValueError(f"drift method {method!r} is not supported; use one of {STAT_TESTS}")
    if method == "wasserstein":
        if categorical:
            raise ValueError("wasserstein measures numbers; use jensenshannon for categories")
        return lambda ref, cur: wasserstein_normed(ref.to_numpy(float), cur.to_numpy(float))
    if not categorical:
        raise ValueError("jensenshannon is implemented here for categories; use wasserstein")
    return jensenshannon_categories


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    options: DriftOptions,
    threshold: float | None = None,
) -> DriftResult:
    """Per-column drift scores and flags, with no report: each column's distance (on its values
    without missing ones, as Evidently's per-column drift does) against the threshold; a column
    drifts when its distance reaches it."""
    if current.empty:
        raise ValueError("no current rows to compare with the reference")
    limit = options.threshold if threshold is None else threshold
    ref_typed, cur_typed = (
        _typed(reference, numeric, categorical),
        _typed(current, numeric, categorical),
    )
    scores: dict[str, float] = {}
    drifted: list[str] = []
    for is_categorical, columns, method in (
        (False, numeric, options.method),
        (True, categorical, options.cat_method),
    ):
        distance = _stat_test(method, is_categorical)
        for c in columns:
            ref, cur = (
                f[c].replace([-np.inf, np.inf], np.nan).dropna() for f in (ref_typed, cur_typed)
            )
            if ref.empty or cur.empty:
                side = "reference" if ref.empty else "current"
                raise ValueError(f"column {c!r} has no values in the {side} rows")
            scores[c] = distance(ref, cur)
            if scores[c] >= limit:
                drifted.append(c)
    return DriftResult(
        rows_current=len(current),
        rows_reference=len(reference),
        scores=scores,
        drifted=drifted,
        share=len(drifted) / max(len(scores), 1),
    )


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    options: DriftOptions,
    threshold: float | None = None,
) -> DriftResult:
    """`column_drift`, with Evidently's data-drift report of the same comparison to save as
    HTML."""
    limit = options.threshold if threshold is None else threshold
    result = column_drift(reference, current, numeric, categorical, options, limit)
    result.snapshot = drift_report(reference, current, numeric, categorical, options, limit)
    return result


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    options: DriftOptions,
    threshold: float,
) -> Any:
    """Evidently's data-drift report of a comparison (its `DataDriftPreset`, method and
    threshold named explicitly); returns its snapshot (`save_html`)."""
    from evidently.presets import DataDriftPreset

    # Evidently calls a dataset drifted when its drifted share is >= drift_share (and its test
    # passes when it is <); ours, when it is > max_drift_share. With n columns the share moves
    # in steps of 1/n, so the next step above ours makes its page say what the check says (at
    # 0.0 it would call every partition drifted and fail its test, however clean)
    n = max(len(numeric) + len(categorical), 1)
    preset = DataDriftPreset(
        columns=numeric + categorical,
        method=options.method,
        cat_method=options.cat_method,
        threshold=threshold,
        drift_share=(math.floor(options.max_drift_share * n + 1e-9) + 1) / n,
    )
    return _run_report([preset], reference, current, numeric, categorical)


def unstable_features(
    train: pd.DataFrame, reference: pd.DataFrame, options: DriftOptions, rows: int = REFERENCE_ROWS
) -> dict[str, float]:
    """Features that already drift between a model's training window and its reference days
    (e.g. counts that grow while a young shop accumulates history): part of the reference
    statistics of a version, reported for every partition but not judged, since their drift
    says nothing the version has not seen."""
    sample = train.sample(min(len(train), rows), random_state=0)
    return column_drift(sample, reference, *_judged_columns(None), options).drifted_scores()


@dataclass(frozen=True)
class SliceDrift:
    """Feature drift within one slice (a segment or a region), or why it was not judged."""

    by: str
    value: str
    rows_current: int
    rows_reference: int
    share: float | None
    drifted: dict[str, float]

    @property
    def judged(self) -> bool:
        return self.share is not None


def drift_by_slice(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    by: str,
    options: DriftOptions,
    judged: list[str] | None = None,
) -> list[SliceDrift]:
    """Feature drift per value of `by` (e.g. segment or region); slices with fewer than
    `min_slice_rows` rows on either side are listed but not judged. The drifted columns are
    named only for slices over `max_drift_share`."""
    out: list[SliceDrift] = []
    numeric, categorical = _judged_columns(judged, without=by)
    for value in sorted(set(current[by].dropna().astype(str))):
        cur = current[current[by].astype(str) == value]
        ref = reference[reference[by].astype(str) == value]
        if min(len(cur), len(ref)) < options.min_slice_rows:
            out.append(SliceDrift(by, value, len(cur), len(ref), None, {}))
            continue
        result = column_drift(ref, cur, numeric, categorical, options)
        named = result.drifted_scores() if result.share > options.max_drift_share else {}
        out.append(SliceDrift(by, value, len(cur), len(ref), result.share, named))
    return out


def slices_over(slices: list[SliceDrift], max_share: float) -> list[SliceDrift]:
    """The judged slices whose drifted share exceeds `max_share`."""
    return [s for s in slices if s.judged and (s.share or 0.0) > max_share]


@dataclass
class VersionDrift:
    """One model version's drift on one day: the judged features overall and per slice, and its
    score; the verdict of the two drift checks."""

    judged: list[str]
    unstable: list[str]
    reference: pd.DataFrame = field(repr=False)
    current: pd.DataFrame = field(repr=False)
    features: DriftResult
    score: DriftResult
    slices: list[SliceDrift]
    over: list[SliceDrift]
    max_share: float

    @property
    def features_ok(self) -> bool:
        return self.features.share <= self.max_share and not self.over

    @property
    def score_ok(self) -> bool:
        return not self.score.drifted

    @property
    def worst_share(self) -> float:
        return max([self.features.share, *[s.share or 0.0 for s in self.over]])


def version_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    segment_of: pd.DataFrame,
    unstable: list[str],
    options: DriftOptions,
) -> VersionDrift:
    """Drift of the carts one version scored against that version's reference: every monitored
    feature but the `unstable` ones (those already drifting inside its training window), overall,
    per region and per customer segment (when there are several), and the risk score. The
    reference is cut to the regions the version scored (a pilot version serves only the pilot
    regions) and segmented with today's `segment_of`, so a re-segmentation does not fake drift."""
    judged = [c for c in (*MONITORED_NUMERIC, *MONITORED_CATEGORICAL) if c not in unstable]
    regions = set(current["region"])
    reference = reference[reference["region"].isin(regions)]
    if reference.empty:
        raise ValueError(
            f"the drift reference has no carts of the regions scored ({sorted(regions)}):"
            " retrain to rebuild it"
        )
    reference = reference.merge(segment_of, on="customer_id", how="left")
    reference["segment"] = reference["segment"].fillna("unsegmented")
    numeric, categorical = _judged_columns(judged)
    features = column_drift(reference, current, numeric, categorical, options)
    score = column_drift(reference, current, [SCORE_COLUMN], [], options, options.score_threshold)
    slices = drift_by_slice(reference, current, "region", options, judged)
    if current["segment"].nunique() > 1:
        slices += drift_by_slice(reference, current, "segment", options, judged)
    over = slices_over(slices, options.max_drift_share)
    return VersionDrift(
        judged, unstable, reference, current, features, score, slices, over, options.max_drift_share
    )


def render_reports(
    drift: VersionDrift, options: DriftOptions, folder: Path, day: str
) -> list[Path]:
    """Evidently's data-drift reports (features, score) of a version's day, as HTML in `folder`
    (the verdict is `drift`'s already; the reports are its evidence)."""
    numeric, categorical = _judged_columns(drift.judged)
    pages = [
        (f"{day}_features.html", numeric, categorical, options.threshold),
        (f"{day}_score.html", [SCORE_COLUMN], [], options.score_threshold),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, num, cat, limit in pages:
        report = drift_report(drift.reference, drift.current, num, cat, options, limit)
        report.save_html(str(folder / name))
        out.append(folder / name)
    return out


@dataclass(frozen=True)
class PerformanceBounds:
    """Realised performance a model must keep once its carts' outcomes are known."""

    min_roc_auc: float = 0.75
    max_calibration_error: float = 0.08
    min_labelled: int = 200


def realised_performance(
    labels: np.ndarray, risk: np.ndarray, bounds: PerformanceBounds
) -> dict[str, Any]:
    """ROC-AUC and calibration error of the scores against the outcomes, and whether they keep
    the bounds; `status` is `pending` while fewer than `min_labelled` outcomes are final."""
    from cartintel_assets.models.abandonment import risk_metrics

    y = np.asarray(labels, dtype=int)
    n = len(y)
    if n < bounds.min_labelled or len(set(y.tolist())) < 2:
        return {"status": "pending", "labelled": n, "passed": True}
    m = risk_metrics(y, np.asarray(risk, dtype=float))
    passed = m["roc_auc"] >= bounds.min_roc_auc and (
        m["calibration_error"] <= bounds.max_calibration_error
    )
    return {
        "status": "measured",
        "labelled": n,
        "roc_auc": m["roc_auc"],
        "calibration_error": m["calibration_error"],
        "base_rate": m["base_rate"],
        "mean_risk": float(np.mean(risk)),
        "passed": bool(passed),
    }


REFERENCE_TABLE = "drift_reference"


def store_reference(con: Any, name: str, version: str, reference: pd.DataFrame) -> None:
    """Keep a version's reference sample in the warehouse (replacing an earlier one of the same
    version, so re-registering is idempotent)."""
    from cartintel_assets.warehouse.tables import replace_rows

    frame = reference.assign(model_name=name, model_version=str(version))
    con.register("_reference_frame", frame)
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {REFERENCE_TABLE} AS SELECT * FROM _reference_frame LIMIT 0"
        )
    finally:
        con.unregister("_reference_frame")
    replace_rows(
        con, REFERENCE_TABLE, frame, "model_name = ? AND model_version = ?", [name, str(version)]
    )


def load_reference(con: Any, name: str, version: str) -> pd.DataFrame:
    """A version's reference sample; a clear error when the version has none."""
    from cartintel_assets.warehouse.tables import has_table

    frame = (
        con.execute(
            f"SELECT * FROM {REFERENCE_TABLE} WHERE model_name = ? AND model_version = ?",
            [name, str(version)],
        ).df()
        if has_table(con, REFERENCE_TABLE)
        else pd.DataFrame()
    )
    if frame.empty:
        raise LookupError(
            f"no drift reference for {name} version {version}: it is written when the version is"
            " trained (abandonment_training_job); retrain to monitor it"
        )
    return frame.drop(columns=["model_name", "model_version"])
