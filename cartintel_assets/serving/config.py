"""What the scoring service is configured with: where it reads and writes, how often it looks for
changes, and the plan rules it decides by (the deployed settings the daily plan reads too)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cartintel_assets import settings
from cartintel_assets.serving.auth import Tokens
from cartintel_assets.serving.body_limit import DEFAULT_MAX_BODY_BYTES
from cartintel_assets.serving.decision import ServingPlan


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service reads and writes, and how often it looks for changes."""

    warehouse: Path = field(default_factory=settings.warehouse_path)
    ledger: Path = field(
        default_factory=lambda: settings.warehouse_path().parent / "serving" / "contacts.sqlite"
    )
    # decisions answered, until the companion process moves them to the warehouse (None:
    # `serving/decisions.sqlite` beside the warehouse)
    spool: Path = None  # type: ignore[assignment]
    reports: Path = field(default_factory=settings.reports_dir)
    landing: Path = field(default_factory=settings.landing_dir)  # consent withdrawals, at once
    shadow: bool = True
    reload_interval_s: float = 5.0
    snapshot_refresh_s: float = 300.0
    flush_interval_s: float = 5.0
    max_batch: int = 64
    gather_turns: int = 8  # event-loop turns that let arrived requests join a batch
    tokens: Tokens = field(default_factory=Tokens)  # none: open (local development only)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger bodies: 413 before they are read

    def __post_init__(self) -> None:
        if self.spool is None:
            spool = self.warehouse.parent / "serving" / "decisions.sqlite"
            object.__setattr__(self, "spool", spool)

    @classmethod
    def from_env(cls) -> ServiceSettings:
        env = os.environ.get
        return cls(
            shadow=env("CARTINTEL_SERVE_SHADOW", "1") != "0",
            reload_interval_s=float(env("CARTINTEL_SERVE_RELOAD_S", "5")),
            snapshot_refresh_s=float(env("CARTINTEL_SERVE_SNAPSHOT_S", "300")),
            flush_interval_s=float(env("CARTINTEL_SERVE_FLUSH_S", "5")),
            tokens=Tokens.from_env(),
            max_body_bytes=int(env("CARTINTEL_SERVE_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))),
        )


def serving_plan() -> ServingPlan:
    """The daily plan's rules and the rollout's holdout, as deployed (the plan reads the same)."""
    from cartintel_assets.decisions.settings import PlanSettings
    from cartintel_assets.registry.rollout import RolloutSettings

    c = PlanSettings().deployed()
    return ServingPlan(
        rules=c.rules(),
        catalogue=c.catalogue(),
        margin_rate=c.margin_rate,
        holdout_share=RolloutSettings().deployed().holdout_share,
        holdout_salt=c.holdout_salt,
    )
