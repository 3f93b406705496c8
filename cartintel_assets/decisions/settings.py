"""The daily plan's settings: budget, economics and the rules every plan obeys. One definition,
read by the `intervention_plan` asset (as its Dagster config) and by the scoring service, both
through the deployment file (`settings.deployed`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cartintel_assets import settings
from cartintel_assets.decisions.catalogue import DEFAULT_CATALOGUE, Intervention, load_catalogue
from cartintel_assets.decisions.plan import ContactRules, PlanRules

SECTION = "plan"


class PlanSettings(BaseModel):
    """Budget, economics and the rules every plan obeys."""

    budget: float = Field(default=150.0, ge=0, description="Expected spend allowed per day.")
    margin_rate: float = Field(default=0.4, gt=0, le=1, description="Gross margin on cart value.")
    catalogue_path: str = Field(
        default=str(DEFAULT_CATALOGUE), description="The intervention catalogue (YAML)."
    )
    holdout_salt: str = Field(
        default="cartintel-holdout-v1",
        description="Salt of the holdout hash; changing it reshuffles the holdout.",
    )
    min_hours_between_contacts: float = Field(default=16.0, ge=0, description="Contact gap.")
    max_contacts_per_week: int = Field(default=3, ge=1, description="Contacts per 7 days.")
    send_delay_minutes: float = Field(
        default=60.0, ge=0, description="When a nudge goes out after the session ended."
    )
    exploration_share: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="Share of contactable carts given a uniformly random choice (no intervention"
        " included), its propensity logged, so the next uplift model can learn from the plan's"
        " own log; 0 turns exploration off. Lowered on days where it would be expected to spend"
        " more than `exploration_budget_share` of the budget.",
    )
    exploration_budget_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Share of the day's budget exploration may be expected to spend. Exploration"
        " is paid from the budget: the plan gets what it leaves, so plan and exploration"
        " together never spend more than the budget.",
    )
    exploration_salt: str = Field(
        default="cartintel-explore-v1", description="Salt of the exploration hash."
    )
    max_discount: float = Field(default=0.10, ge=0, lt=1, description="Deepest discount.")
    max_discount_by_segment: dict[str, float] = Field(
        default={},
        description="Deepest discount per segment name, e.g. {'deal seekers': 0.05} so deal"
        " seekers are not trained to wait for discounts.",
    )
    # shipping costs differ by region, so free-shipping offers do too; 15 points leaves room for
    # that while catching targeting that follows a group
    disparity_bound: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Largest gap, in percentage points of carts, between the intervention rates"
        " of the groups of region, device or new-vs-returning (blocking).",
    )
    min_group_size: int = Field(
        default=30, ge=1, description="Groups smaller than this are reported, not bounded."
    )

    def rules(self) -> PlanRules:
        """The plan's rules (the scoring service applies the same ones)."""
        return PlanRules(
            budget=self.budget,
            contact=ContactRules(self.min_hours_between_contacts, self.max_contacts_per_week),
            max_discount=self.max_discount,
            max_discount_by_segment=dict(self.max_discount_by_segment),
        )

    def catalogue(self) -> list[Intervention]:
        """The intervention catalogue, linted (manipulative designs are refused)."""
        return load_catalogue(self.catalogue_path)

    def deployed(self) -> PlanSettings:
        """These settings under the deployment file's `plan:` section: values set explicitly
        here (a run's config) win over the file, the file over the defaults."""
        return settings.deployed_over(PlanSettings, SECTION, self)
