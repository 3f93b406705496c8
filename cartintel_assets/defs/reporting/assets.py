"""The executive dashboard: a self-contained HTML page for decision-makers, rebuilt from the
warehouse's latest outputs and the registry's aliases (served by `cartintel serve` at /dashboard)."""

import dagster as dg

from cartintel_assets import settings
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource


@dg.asset(
    group_name="reporting",
    deps=[
        "abandonment_scores",
        "session_features",
        "intervention_plan",
        "customer_segments",
        "friction_index",
        "friction_drivers",
        "category_review_signals",
        "data_quality_scorecard",
        "model_promotions",
    ],
    kinds={"plotly", "html"},
)
def executive_dashboard(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
) -> dg.MaterializeResult:
    """Who is most at risk, which segments need intervention, which categories drive friction and
    which actions lift conversion; plus the data-quality scorecard and which model versions hold
    `pilot` and `global`. One HTML file with interactive charts that opens without a network."""
    from cartintel_assets.reporting.dashboard import publish

    built_from = f"warehouse {warehouse.path().name}, registry {mlflow_tracking.uri()}"
    with warehouse.reader() as con:
        path, page, sections = publish(
            con, mlflow_tracking.store(), settings.reports_dir(), built_from
        )
    kpis = {f"{s.key}: {k}": v for s in sections for k, v in s.kpis.items()}
    empty = [s.key for s in sections if not s.figures and not s.tables]
    context.log.info(f"dashboard written to {path} ({len(page) / 1e6:.1f} MB)")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "open": dg.MetadataValue.md(
                f"Open [{path.name}](file://{path}) in a browser, or `cartintel serve` and"
                " http://127.0.0.1:8000/dashboard"
            ),
            "charts": sum(len(s.figures) for s in sections),
            "sections_without_data": dg.MetadataValue.json(empty),
            "headline": dg.MetadataValue.json(kpis),
            "size_bytes": len(page.encode()),
        }
    )
