"""The risk model's training gates are a pure verdict on its test metrics."""

from __future__ import annotations

from cartintel_assets.models.abandonment import TRAINING_GATES, TrainingBounds, training_gates

GOOD = {"roc_auc": 0.82, "pr_auc": 0.6, "calibration_error": 0.02}


def _failed(metrics: dict[str, float], incumbent: float | None) -> list[str]:
    gates = training_gates(metrics, incumbent, TrainingBounds())
    assert list(gates) == list(TRAINING_GATES)
    return [name for name, g in gates.items() if not g.passed]


def test_a_good_model_passes_every_gate_with_or_without_a_global_version() -> None:
    assert _failed(GOOD, None) == []
    assert _failed(GOOD, 0.825) == []  # within the tolerance of 0.01


def test_each_bound_fails_its_own_gate() -> None:
    assert _failed({**GOOD, "roc_auc": 0.74}, None) == [TRAINING_GATES[0]]
    assert _failed({**GOOD, "pr_auc": 0.44}, None) == [TRAINING_GATES[1]]
    assert _failed({**GOOD, "calibration_error": 0.051}, None) == [TRAINING_GATES[2]]
    assert _failed(GOOD, 0.835) == [TRAINING_GATES[3]]
    observed = training_gates(GOOD, None, TrainingBounds())[TRAINING_GATES[3]].observed
    assert observed["global_test_roc_auc"] == "no global"
