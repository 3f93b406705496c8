"""How every cartintel job runs: assets in one process."""

import dagster as dg


def asset_job(
    name: str,
    selection: dg.AssetSelection,
    description: str,
    config: dict | None = None,
) -> "dg.UnresolvedAssetJobDefinition":
    """A job over `selection`, run in-process: a step per process would re-import the stack
    (~8.5 s a step) and DuckDB takes one writer at a time anyway."""
    return dg.define_asset_job(
        name,
        selection=selection,
        executor_def=dg.in_process_executor,
        description=description,
        config=config,
    )
