"""Connections to the DuckDB warehouse, safe for concurrent runs and the scoring service.

DuckDB allows one writer process per file and no reader beside it (dagster issues #16248,
#18746). Every connection therefore takes an advisory lock on a sidecar file first: writers an
exclusive one, readers a shared one (read-only connections), so runs queue instead of failing on
DuckDB's lock and the file is never corrupted.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb


@contextmanager
def file_lock(path: Path, exclusive: bool, timeout_s: float) -> Iterator[None]:
    """Hold an advisory lock on `path` (created if missing); raise after `timeout_s` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"warehouse {path.with_suffix('')} stayed locked for {timeout_s:.0f} s by another run"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Warehouse:
    """One DuckDB warehouse file and how long a caller waits for it."""

    path: Path
    lock_timeout_s: float = 600.0
    connection_config: Mapping[str, Any] = field(default_factory=dict)

    @contextmanager
    def _connect(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        db = self.path
        db.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db.with_name(db.name + ".lock"), not read_only, self.lock_timeout_s):
            if read_only and not db.exists():
                raise FileNotFoundError(
                    f"warehouse {db} does not exist yet: materialise the ingestion assets first"
                )
            con = duckdb.connect(
                str(db),
                read_only=read_only,
                config={"custom_user_agent": "cartintel", **self.connection_config},
            )
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, serialised with every other writer and reader."""
        with self._connect(read_only=False) as con:
            yield con

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; many readers may hold one at once, never beside a writer."""
        with self._connect(read_only=True) as con:
            yield con
