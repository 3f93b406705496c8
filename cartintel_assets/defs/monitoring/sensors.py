"""Drift-driven retraining: the sensor records a `retraining_request` when monitoring of the
newest model version failed and enough carts were labelled since it was trained; the model's
automation condition then retrains it unless a blocking data-quality check upstream failed."""

from datetime import datetime
from typing import Any

import dagster as dg

from cartintel_assets.defs.monitoring.assets import RESULTS_TABLE
from cartintel_assets.registry.names import ABANDONMENT_MODEL
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource

_FAILED_SQL = f"""
SELECT partition_date, check_name, value FROM {RESULTS_TABLE}
WHERE model_name = ? AND model_version = ? AND NOT passed
  AND partition_date > CAST(CAST(? AS TIMESTAMP) AS DATE)
ORDER BY partition_date, check_name
"""
_NEW_LABELS_SQL = """
SELECT count(*) FROM abandonment_labels
WHERE label_complete AND started_at > CAST(? AS TIMESTAMP)
"""


def retraining_decision(
    con: Any, version: str, data_to: str, min_new_labels: int
) -> tuple[bool, str, dict[str, Any]]:
    """Whether monitoring of `version` failed on days after its data and at least
    `min_new_labels` carts were labelled since: (request?, why, evidence)."""
    from cartintel_assets.warehouse.tables import has_table

    if not has_table(con, RESULTS_TABLE):
        return False, "nothing monitored yet", {}
    failed = con.execute(_FAILED_SQL, [ABANDONMENT_MODEL, version, data_to]).df()
    if failed.empty:
        return False, f"no drift or performance check of version {version} failed", {}
    found = con.execute(_NEW_LABELS_SQL, [data_to]).fetchone()
    new_labels = int(found[0]) if found else 0
    evidence = {
        "version": version,
        "trained_on_data_to": data_to,
        "failed_checks": [
            f"{r.partition_date:%Y-%m-%d} {r.check_name} ({r.value:.3f})"
            for r in failed.itertuples()
        ],
        "new_labelled_carts": new_labels,
        "min_new_labels": min_new_labels,
    }
    if new_labels < min_new_labels:
        return (
            False,
            f"{len(failed)} failed checks of version {version}; waiting for labels:"
            f" {new_labels} of {min_new_labels} new labelled carts",
            evidence,
        )
    return (
        True,
        f"{len(failed)} failed checks of version {version} and {new_labels} new labelled carts",
        evidence,
    )


@dg.sensor(
    name="abandonment_retraining_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one retraining of cartintel-abandonment when drift or realised"
    " performance of its newest version failed and enough new labels exist.",
)
def abandonment_retraining_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    rollout: RolloutResource,
) -> dg.SensorResult | dg.SkipReason:
    from cartintel_assets.registry.registration import latest_version

    if not warehouse.path().exists():
        return dg.SkipReason(f"no warehouse at {warehouse.path()} yet")
    newest = latest_version(mlflow_tracking.store(), ABANDONMENT_MODEL)
    if newest is None:
        return dg.SkipReason(f"no version of {ABANDONMENT_MODEL} is trained yet")
    version, tags = newest
    if context.cursor == version:
        return dg.SkipReason(f"retraining already requested after version {version}")
    if "data_to" not in tags:
        return dg.SkipReason(f"version {version} does not record its data window (data_to)")
    with warehouse.reader() as con:
        request, why, evidence = retraining_decision(
            con, version, tags["data_to"], rollout.deployed().retrain_min_new_labels
        )
    if not request:
        return dg.SkipReason(why)
    context.log.info(f"requesting retraining: {why}")
    return dg.SensorResult(
        asset_events=[
            dg.AssetMaterialization(
                "retraining_request",
                description=why,
                metadata={
                    "reason": why,
                    "requested_at": datetime.now().isoformat(timespec="seconds"),
                    "evidence": dg.MetadataValue.json(evidence),
                },
            )
        ],
        cursor=version,
    )
