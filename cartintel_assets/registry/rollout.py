"""The roadmap's phase settings: pilot regions, the holdout, the bounds of each promotion gate and
when drift justifies retraining. One definition, read by the Dagster resource and the scoring
service, both through the deployment file's `rollout:` section (`settings.deployed`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cartintel_assets import settings
from cartintel_assets.registry.promotion import PhasePlan

SECTION = "rollout"
_D = PhasePlan()


class RolloutSettings(BaseModel):
    """Phase 2 (regional pilot) and phase 3 (global) settings, shared by scoring, promotion and
    the retraining sensor."""

    pilot_regions: list[str] = Field(
        default=list(_D.pilot_regions), description="Regions scored by the `pilot` version."
    )
    holdout_share: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Persistent holdout: share of customers the plan never contacts"
        " (the baseline of measured lift).",
    )
    pilot_min_auc_gain: float = Field(
        default=_D.pilot_min_auc_gain,
        description="To pilot: least ROC-AUC gain over `global` on the same held-out carts.",
    )
    pilot_max_log_loss_ratio: float = Field(
        default=_D.pilot_max_log_loss_ratio,
        description="To pilot: largest log-loss of the candidate relative to `global`'s.",
    )
    global_min_labelled: int = Field(
        default=_D.global_min_labelled,
        description="To global: fewest pilot-scored carts with final outcomes.",
    )
    global_min_roc_auc: float = Field(
        default=_D.global_min_roc_auc, description="To global: least realised pilot ROC-AUC."
    )
    global_max_calibration_error: float = Field(
        default=_D.global_max_calibration_error,
        description="To global: largest realised pilot calibration error.",
    )
    global_min_incremental_conversion: float = Field(
        default=_D.global_min_incremental_conversion,
        description="To global: the upper end of the 95 % interval of the conversion lift of"
        " intervened pilot carts (riskier half) over the holdout must reach this.",
    )
    global_max_auc_gap: float = Field(
        default=_D.global_max_auc_gap,
        description="To global: largest ROC-AUC gap across devices and across pilot regions.",
    )
    erasure_grace_days: float = Field(
        default=_D.erasure_grace_days,
        ge=0,
        description="Days a version that learned from erased rows may still be promoted; then"
        " it must be retrained without them or certified (tag erasure_certified).",
    )
    retrain_min_new_labels: int = Field(
        default=1000,
        ge=0,
        description="Drift-driven retraining waits for this many newly labelled carts since the"
        " last training.",
    )

    def plan(self) -> PhasePlan:
        return PhasePlan(
            pilot_regions=tuple(self.pilot_regions),
            pilot_min_auc_gain=self.pilot_min_auc_gain,
            pilot_max_log_loss_ratio=self.pilot_max_log_loss_ratio,
            global_min_labelled=self.global_min_labelled,
            global_min_roc_auc=self.global_min_roc_auc,
            global_max_calibration_error=self.global_max_calibration_error,
            global_min_incremental_conversion=self.global_min_incremental_conversion,
            global_max_auc_gap=self.global_max_auc_gap,
            erasure_grace_days=self.erasure_grace_days,
        )

    def deployed(self) -> RolloutSettings:
        """These settings under the deployment file's `rollout:` section: values set explicitly
        here (a resource's arguments) win over the file, the file over the defaults."""
        return settings.deployed_over(RolloutSettings, SECTION, self)
