"""Monitoring of the abandonment-risk model: drift of each scored day against the reference of
the version that scored it (Evidently 0.7), and realised performance once outcomes are final.
Failed checks here, with enough new labels, make the retraining sensor request a retraining."""

import json
from datetime import date
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from cartintel_assets import settings
from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.monitoring.drift import DriftOptions, PerformanceBounds
from cartintel_assets.registry.names import ABANDONMENT_MODEL
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.warehouse.tables import replace_rows, require_tables

DRIFT_CHECKS = ("abandonment_feature_drift", "abandonment_score_drift")
PERFORMANCE_CHECK = "abandonment_realised_performance"
RESULTS_TABLE = "monitoring_results"
RESULT_COLUMNS: dict[str, str] = {
    "partition_date": "DATE",
    "model_name": "VARCHAR",
    "model_version": "VARCHAR",
    "check_name": "VARCHAR",
    "passed": "BOOLEAN",
    "value": "DOUBLE",
    "rows": "BIGINT",
    "detail": "VARCHAR",  # JSON
    "dagster_run_id": "VARCHAR",
}
_D = DriftOptions()


class DriftMonitorConfig(dg.Config):
    """How drift is measured (Evidently methods, named explicitly) and what fails the checks."""

    method: str = Field(default=_D.method, description="Evidently stat test for numeric features.")
    cat_method: str = Field(default=_D.cat_method, description="Stat test for categorical ones.")
    threshold: float = Field(default=_D.threshold, description="Per-feature drift threshold.")
    max_drift_share: float = Field(
        default=_D.max_drift_share,
        description="Fail when more than this share of judged features drift, overall or in any"
        " region or segment.",
    )
    score_threshold: float = Field(
        default=_D.score_threshold, description="Drift threshold of the risk score."
    )
    min_slice_rows: int = Field(
        default=_D.min_slice_rows, description="Smaller slices are reported, not judged."
    )
    reports: Literal["drifted", "always"] = Field(
        default="drifted",
        description="Render the Evidently HTML reports for the versions whose features or score"
        " drifted (the evidence), or for every version and day.",
    )

    def options(self) -> DriftOptions:
        return DriftOptions(
            method=self.method,
            cat_method=self.cat_method,
            threshold=self.threshold,
            max_drift_share=self.max_drift_share,
            score_threshold=self.score_threshold,
            min_slice_rows=self.min_slice_rows,
        )


_SCORED_SQL = """
SELECT f.*, s.risk, s.model_version, s.model_alias, s.model_run_id,
       coalesce(g.segment_name, 'unsegmented') AS segment
FROM abandonment_scores s
JOIN session_features f USING (session_id)
LEFT JOIN {segments} g ON g.customer_id = f.customer_id
WHERE s.partition_date = ? AND s.model_name = ?
"""


def write_results(con: Any, day: date, check: str, rows: list[dict[str, Any]]) -> None:
    """Replace one check's results of one day in `monitoring_results` (the sensor reads them)."""
    from cartintel_assets.warehouse.tables import typed_temp_table

    cols = ", ".join(f"{c} {t}" for c, t in RESULT_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {RESULTS_TABLE} ({cols})")
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    typed_temp_table(con, frame, RESULT_COLUMNS, "_monitoring_rows")
    replace_rows(
        con,
        RESULTS_TABLE,
        con.execute("SELECT * FROM _monitoring_rows").df(),
        "partition_date = ? AND check_name = ?",
        [day, check],
    )


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    deps=["abandonment_scores", "session_features", "customer_segments"],
    kinds={"evidently", "mlflow"},
    check_specs=[dg.AssetCheckSpec(c, asset="abandonment_drift") for c in DRIFT_CHECKS],
)
def abandonment_drift(
    context: dg.AssetExecutionContext,
    config: DriftMonitorConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
) -> Any:
    """Drift of the day's scored carts against the reference of the version that scored them:
    every judged feature overall, per region and per customer segment, and the risk score.

    The reference (a sample of the version's test window with its out-of-sample scores, and the
    features that already drifted inside its own training window) is written once, when the
    version is trained. The Evidently HTML report is kept under the reports folder and in the
    version's MLflow run (`monitoring/<day>/`).
    """
    from cartintel_assets.models.plots import markdown_table
    from cartintel_assets.monitoring.drift import (
        load_reference,
        render_reports,
        version_drift,
    )
    from cartintel_assets.warehouse.tables import has_table

    options = config.options()
    day = date.fromisoformat(context.partition_key)
    client = mlflow_tracking.store().client
    with warehouse.reader() as con:
        require_tables(con, "abandonment_scores", "session_features")
        segments = (
            "customer_segments"
            if has_table(con, "customer_segments")
            else ("(SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS segment_name)")
        )
        scored = con.execute(_SCORED_SQL.format(segments=segments), [day, ABANDONMENT_MODEL]).df()
        if scored.empty:
            raise ValueError(
                f"no scored carts of {ABANDONMENT_MODEL} on {day}: materialise abandonment_scores first"
            )
        references = {
            v: load_reference(con, ABANDONMENT_MODEL, v) for v in scored["model_version"].unique()
        }
        segment_of = con.execute(
            f"SELECT DISTINCT customer_id, segment_name AS segment FROM {segments}"
        ).df()

    feature_rows: list[dict[str, Any]] = []
    score_rows: list[dict[str, Any]] = []
    report_links: dict[str, str] = {}
    shown: list[dict[str, Any]] = []
    slice_tables: list[pd.DataFrame] = []
    for version, current in scored.groupby("model_version"):
        version = str(version)
        mv = client.get_model_version(ABANDONMENT_MODEL, version)
        unstable = [c for c in mv.tags.get("drift.unstable_features", "").split(",") if c]
        try:
            drift = version_drift(references[version], current, segment_of, unstable, options)
        except ValueError as err:
            raise ValueError(f"version {version} on {day}: {err}") from err
        overall, scores, over = drift.features, drift.score, drift.over
        # the Evidently pages are the evidence of a drift, and most of a comparison's cost
        reports: list[str] = []
        if config.reports == "always" or not (drift.features_ok and drift.score_ok):
            folder = settings.reports_dir() / "drift" / ABANDONMENT_MODEL / f"v{version}"
            for page in render_reports(drift, options, folder, str(day)):
                client.log_artifact(mv.run_id, str(page), f"monitoring/{day}")
                reports.append(str(page))
                report_links[f"v{version} {page.stem.split('_')[-1]}"] = str(page)

        detail = {
            "judged": len(drift.judged),
            "share": overall.share,
            "drifted": overall.drifted_scores(),
            "slices_over": [
                {"by": s.by, "value": s.value, "share": s.share, "drifted": s.drifted} for s in over
            ],
            "not_judged_unstable": unstable,
            "reports": reports,
        }
        feature_rows.append(
            {
                "partition_date": day,
                "model_name": ABANDONMENT_MODEL,
                "model_version": version,
                "check_name": DRIFT_CHECKS[0],
                "passed": drift.features_ok,
                "value": drift.worst_share,
                "rows": len(current),
                "detail": json.dumps(detail),
                "dagster_run_id": context.run.run_id,
            }
        )
        score_value = scores.scores.get("risk", 0.0)
        score_rows.append(
            {
                "partition_date": day,
                "model_name": ABANDONMENT_MODEL,
                "model_version": version,
                "check_name": DRIFT_CHECKS[1],
                "passed": drift.score_ok,
                "value": score_value,
                "rows": len(current),
                "detail": json.dumps(
                    {
                        "method": options.method,
                        "threshold": options.score_threshold,
                        "reference_mean_risk": float(drift.reference["risk"].mean()),
                        "current_mean_risk": float(current["risk"].mean()),
                        "reports": reports,
                    }
                ),
                "dagster_run_id": context.run.run_id,
            }
        )
        shown.append(
            {
                "version": version,
                "alias": ",".join(sorted(set(current["model_alias"]))),
                "carts": len(current),
                "share_drifted": overall.share,
                "drifted": ", ".join(f"{k} {v:.2f}" for k, v in overall.drifted_scores().items()),
                "score_drift": score_value,
            }
        )
        slice_tables.append(
            pd.DataFrame(
                [
                    {
                        "version": version,
                        "slice": f"{s.by}={s.value}",
                        "carts": s.rows_current,
                        "share_drifted": s.share if s.judged else float("nan"),
                        "drifted": ", ".join(f"{k} {v:.2f}" for k, v in s.drifted.items())
                        or ("" if s.judged else "too few rows"),
                    }
                    for s in drift.slices
                ]
            )
        )
    with warehouse.get_connection() as con:
        write_results(con, day, DRIFT_CHECKS[0], feature_rows)
        write_results(con, day, DRIFT_CHECKS[1], score_rows)

    table = pd.DataFrame(shown)
    slices_frame = pd.concat(slice_tables, ignore_index=True)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scored),
            "versions": dg.MetadataValue.json(
                sorted(str(v) for v in scored["model_version"].unique())
            ),
            "drift": dg.MetadataValue.md(
                markdown_table(table, list(table.columns), rows=len(table))
            ),
            "drift_by_slice": dg.MetadataValue.md(
                markdown_table(slices_frame, list(slices_frame.columns), rows=len(slices_frame))
            ),
            **{f"report {k}": dg.MetadataValue.path(v) for k, v in report_links.items()},
            "mlflow_artifacts": f"runs of the scoring versions, monitoring/{day}/",
            "method": f"{options.method} / {options.cat_method}, threshold {options.threshold},"
            f" max drifted share {options.max_drift_share}",
        }
    )
    for check, rows in ((DRIFT_CHECKS[0], feature_rows), (DRIFT_CHECKS[1], score_rows)):
        yield dg.AssetCheckResult(
            check_name=check,
            passed=all(r["passed"] for r in rows),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                f"v{r['model_version']}": dg.MetadataValue.json(
                    {"passed": r["passed"], "value": r["value"], **json.loads(r["detail"])}
                )
                for r in rows
            },
        )


class PerformanceConfig(dg.Config):
    """Bounds the realised performance of a scored day must keep."""

    min_roc_auc: float = Field(default=PerformanceBounds().min_roc_auc)
    max_calibration_error: float = Field(default=PerformanceBounds().max_calibration_error)
    min_labelled: int = Field(
        default=PerformanceBounds().min_labelled,
        description="Fewer carts with final outcomes: the check reports `pending`.",
    )


_OUTCOME_SQL = """
SELECT s.model_version, s.risk, l.harmful
FROM abandonment_scores s JOIN abandonment_labels l USING (session_id)
WHERE s.partition_date = ? AND s.model_name = ? AND l.label_complete
"""


@dg.asset(
    group_name="monitoring",
    partitions_def=daily_partitions,
    deps=["abandonment_scores", "abandonment_labels"],
    kinds={"duckdb"},
    check_specs=[dg.AssetCheckSpec(PERFORMANCE_CHECK, asset="abandonment_performance")],
)
def abandonment_performance(
    context: dg.AssetExecutionContext, config: PerformanceConfig, warehouse: WarehouseResource
) -> Any:
    """Realised ROC-AUC and calibration of a scored day, per scoring version, once its carts'
    7-day outcomes are final (re-materialise when the day's labels complete)."""
    from cartintel_assets.monitoring.drift import realised_performance

    bounds = PerformanceBounds(
        config.min_roc_auc, config.max_calibration_error, config.min_labelled
    )
    day = date.fromisoformat(context.partition_key)
    with warehouse.reader() as con:
        require_tables(con, "abandonment_scores", "abandonment_labels")
        outcomes = con.execute(_OUTCOME_SQL, [day, ABANDONMENT_MODEL]).df()
    rows, results = [], {}
    for version, g in outcomes.groupby("model_version"):
        r = realised_performance(g["harmful"].to_numpy(), g["risk"].to_numpy(), bounds)
        results[f"v{version}"] = r
        rows.append(
            {
                "partition_date": day,
                "model_name": ABANDONMENT_MODEL,
                "model_version": str(version),
                "check_name": PERFORMANCE_CHECK,
                "passed": r["passed"],
                "value": r.get("roc_auc"),
                "rows": r["labelled"],
                "detail": json.dumps(r),
                "dagster_run_id": context.run.run_id,
            }
        )
    with warehouse.get_connection() as con:
        write_results(con, day, PERFORMANCE_CHECK, rows)
    status = (
        "pending"
        if not results or all(r["status"] == "pending" for r in results.values())
        else "measured"
    )
    yield dg.MaterializeResult(
        metadata={
            "labelled_carts": len(outcomes),
            "status": status,
            "by_version": dg.MetadataValue.json(results),
        }
    )
    yield dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=all(r["passed"] for r in results.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"status": status, **{k: dg.MetadataValue.json(v) for k, v in results.items()}},
    )
