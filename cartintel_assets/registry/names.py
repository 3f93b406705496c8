"""The names that travel between training, the registry, promotion, serving and reporting, defined
once: the registered models and the roadmap's aliases."""

from __future__ import annotations

ABANDONMENT_MODEL = "cartintel-abandonment"
UPLIFT_MODEL = "cartintel-uplift"
SEGMENTATION_MODEL = "cartintel-segmentation"
REGISTERED_MODELS: tuple[str, ...] = (ABANDONMENT_MODEL, UPLIFT_MODEL, SEGMENTATION_MODEL)

# Aliases, one per roadmap phase: a gated candidate, the regional pilot, the global rollout.
CHALLENGER = "challenger"
PILOT = "pilot"
GLOBAL = "global"
PHASES: tuple[str, ...] = (CHALLENGER, PILOT, GLOBAL)

# Models that move through promotion, by the short name the CLI and the jobs use.
PROMOTED_MODELS: dict[str, str] = {"abandonment": ABANDONMENT_MODEL, "uplift": UPLIFT_MODEL}

# Version tags of erasure (README "Privacy"): the erasures whose rows a version may have learned
# from, since when, and who certified that it may stay in use without retraining.
ERASED_TAG = "erased_rows"
ERASED_SINCE_TAG = "erased_rows_since"
CERTIFIED_TAG = "erasure_certified"
