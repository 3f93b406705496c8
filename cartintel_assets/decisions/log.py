"""What the published plan decided, as the decisions a storefront acts on and logs: per cart the
arm (control for none), who chose it with what propensity, and the versions behind it."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from cartintel_assets.warehouse.tables import has_table

# Carts the plan decided on (plan, exploration, holdout); a cart that may not be contacted (no
# consent, bought in its session) was not a decision and is not logged. Only a published plan is
# in `intervention_plan`: a blocked one is never acted on.
_DECISIONS_SQL = """
SELECT session_id,
       CASE WHEN action = 'none' THEN 'control' ELSE action END AS arm,
       chosen_by, propensity, planned_by_run AS policy_version,
       uplift_model_version AS model_version, send_at AS decided_at
FROM intervention_plan
WHERE partition_date = CAST($day AS DATE) AND coalesce(chosen_by, '') <> ''
ORDER BY session_id
"""


def published_decisions(con: duckdb.DuckDBPyConnection, day: date | str) -> pd.DataFrame:
    """The decisions of `day`'s published plan (empty when none was published)."""
    if not has_table(con, "intervention_plan"):
        return pd.DataFrame(
            columns=[
                "session_id",
                "arm",
                "chosen_by",
                "propensity",
                "policy_version",
                "model_version",
                "decided_at",
            ]
        )
    return con.execute(_DECISIONS_SQL, {"day": str(day)}).df()
