"""One settings source: the deployment file, under what a run or a resource sets explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartintel_assets.decisions.settings import PlanSettings
from cartintel_assets.defs.uplift.assets import InterventionPlanConfig
from cartintel_assets.registry.rollout import RolloutSettings
from cartintel_assets.resources.rollout import RolloutResource


@pytest.fixture()
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cartintel.yaml"
    monkeypatch.setenv("CARTINTEL_SETTINGS", str(path))
    return path


def test_without_a_file_the_defaults_hold(deployed: Path) -> None:
    assert PlanSettings().deployed() == PlanSettings()
    assert RolloutSettings().deployed() == RolloutSettings()


def test_the_file_overrides_defaults_and_explicit_values_override_the_file(
    deployed: Path,
) -> None:
    deployed.write_text(
        "plan:\n  budget: 42\n  margin_rate: 0.3\nrollout:\n  holdout_share: 0.1\n"
        "  pilot_regions: [FR]\n"
    )
    plan = PlanSettings().deployed()
    assert (plan.budget, plan.margin_rate, plan.max_discount) == (42, 0.3, 0.10)
    # a Dagster run that sets the budget keeps it; the rest comes from the file
    run = InterventionPlanConfig(budget=7.0).deployed()
    assert (run.budget, run.margin_rate) == (7.0, 0.3)
    assert run.rules().budget == 7.0
    rollout = RolloutResource(pilot_regions=["DE"]).deployed()
    assert rollout.pilot_regions == ["DE"] and rollout.holdout_share == 0.1
    assert RolloutSettings().deployed().plan().pilot_regions == ("FR",)


def test_a_mistyped_setting_is_a_clear_error(deployed: Path) -> None:
    deployed.write_text("plan:\n  budjet: 42\n")
    with pytest.raises(ValueError, match=r"unknown settings \['budjet'\]") as err:
        PlanSettings().deployed()
    assert str(deployed) in str(err.value)
    deployed.write_text("plan:\n  budget: -1\n")
    with pytest.raises(ValueError, match="section 'plan' is invalid"):
        PlanSettings().deployed()
