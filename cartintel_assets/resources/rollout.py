"""The roadmap's phase settings as a Dagster resource (the fields live in `registry.rollout`)."""

from __future__ import annotations

import dagster as dg

from cartintel_assets.registry.rollout import RolloutSettings


class RolloutResource(RolloutSettings, dg.ConfigurableResource):
    """Phase 2 (regional pilot) and phase 3 (global) settings, shared by scoring, promotion and
    the retraining sensor. Call `deployed()` for the values in force: unset fields come from the
    deployment file's `rollout:` section, the one the scoring service reads too."""
