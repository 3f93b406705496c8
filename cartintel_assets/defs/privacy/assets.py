"""Erasure as a job the Dagster UI can launch: one materialisation of `erasure_log` is one
erasure (`privacy.erasure.erase`), with the receipt's counts as metadata. It takes the
subject's pseudonym, not the raw id: a run's config stays in Dagster's run history after the
erasure, and the pseudonym says nothing without the key (`cartintel erase --customer` runs
outside Dagster and takes the raw id)."""

from typing import Any

import dagster as dg
from pydantic import Field

from cartintel_assets.resources import LandingResource, WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource


class ErasureConfig(dg.Config):
    """Whom to erase, and why."""

    pseudonym: str = Field(
        default="",
        description="The customer's pseudonym as held in the warehouse (customer_id there).",
    )
    reason: str = Field(
        default="data subject request", description="Why (no personal data: it is logged)."
    )


@dg.asset(group_name="privacy", kinds={"duckdb", "mlflow"})
def erasure_log(
    context: dg.AssetExecutionContext,
    config: ErasureConfig,
    warehouse: WarehouseResource,
    landing: LandingResource,
    mlflow_tracking: MLflowResource,
) -> dg.MaterializeResult:
    """The erasure log (`erasure_log`, no personal data): each materialisation erases one data
    subject from the landing files, the warehouse, the service's contact ledger, the reports and
    MLflow's artifacts, tags the model versions that learned from their rows, and writes a
    signed receipt (`cartintel erase --verify RECEIPT`)."""
    from cartintel_assets.privacy.erasure import erase
    from cartintel_assets.privacy.subject import Stores, identify

    if not config.pseudonym:
        raise ValueError("set the config's pseudonym: the customer_id held in the warehouse")
    stores = Stores.from_settings(landing=landing.path(), warehouse=warehouse.path())
    subject = identify(stores, landing.pseudonym_key(), pseudonym=config.pseudonym)
    done = erase(stores, subject, config.reason, mlflow_tracking.store(), context.log.info)
    if done.receipt is None:
        context.log.info("nothing held on this subject in any store: nothing erased")
        return dg.MaterializeResult(metadata={"erased": False})
    receipt: dict[str, Any] = done.receipt
    return dg.MaterializeResult(
        metadata={
            "erased": True,
            "erasure_id": receipt["erasure_id"],
            "receipt": dg.MetadataValue.path(str(done.path)),
            "rows_by_store": dg.MetadataValue.json(
                {k: v["rows"] for k, v in receipt["stores"].items()}
            ),
            "model_versions_tagged": dg.MetadataValue.json(receipt["model_versions"]),
        }
    )
