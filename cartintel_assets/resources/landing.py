"""The landing zone where a shop's event pipeline drops one folder of files per day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from cartintel_assets import settings


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


def landed_folders(root: Path) -> tuple[list[str], list[str]]:
    """The day folders (`YYYY-MM-DD`) under `root` in order, and the other folders, which are
    no day: a misplaced folder is named to the user, never taken for a day nor skipped silently.
    Folders starting with "_" hold the bookkeeping of foreign logs (rejects, manifests)."""
    days: list[str] = []
    other: list[str] = []
    if not root.exists():
        return days, other
    for p in root.iterdir():
        if not p.is_dir() or p.name.startswith("_"):
            continue
        try:
            is_day = date.fromisoformat(p.name).isoformat() == p.name  # not 20191001
        except ValueError:
            is_day = False
        (days if is_day else other).append(p.name)
    return sorted(days), sorted(other)
