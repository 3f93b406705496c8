"""The landing zone where a shop's event pipeline drops one folder of files per day."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from cartintel_assets import settings
from cartintel_assets.ingestion.ingest import landed_folders


class LandingResource(dg.ConfigurableResource):
    """Landing files `<root>/<YYYY-MM-DD>/<table>.<ext>` in the canonical schema."""

    root: str = Field(
        default="",
        description="Landing folder; empty means $CARTINTEL_LANDING or data/storefront/landing.",
    )

    def path(self) -> Path:
        return Path(self.root).resolve() if self.root else settings.landing_dir()

    def pseudonym_key(self) -> str:
        """The pseudonymisation key, from the environment at run time (never shown as config)."""
        return settings.pseudonym_key()

    def days(self) -> list[str]:
        """The day folders that have landed, in order."""
        return landed_folders(self.path())[0]
