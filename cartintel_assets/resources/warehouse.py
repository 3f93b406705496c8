"""The DuckDB warehouse as a Dagster resource; the locking lives in `warehouse.connection`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from cartintel_assets import settings
from cartintel_assets.warehouse.connection import Warehouse


class WarehouseResource(DuckDBResource):
    """The cartintel DuckDB warehouse (raw, quarantine, quality and feature tables)."""

    database: str = Field(
        default="",
        description="DuckDB file; empty means $CARTINTEL_WAREHOUSE or data/warehouse.duckdb.",
    )
    lock_timeout_s: float = Field(
        default=600.0, description="How long a run waits for the warehouse."
    )

    def path(self) -> Path:
        return Path(self.database).resolve() if self.database else settings.warehouse_path()

    def warehouse(self) -> Warehouse:
        return Warehouse(self.path(), self.lock_timeout_s, dict(self.connection_config))

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, serialised with every other writer and reader."""
        with self.warehouse().writer() as con:
            yield con

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; many readers may hold one at once, never beside a writer."""
        with self.warehouse().reader() as con:
            yield con
