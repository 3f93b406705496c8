"""What was decided for a day's carts, as the decisions a storefront acts on and logs: per cart
the arm (control for none), who chose it with what propensity, and the versions behind it. Two
sources: the day's published plan, and the decisions `/score` made in real time (the service's
`decision_log`)."""

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


# What `/score` decided for the carts whose cutoff fell on the day: the latest answer per cart
# (a session may be scored more than once). A cart without marketing consent was not a decision;
# the service has no exploration, so its choice had propensity 1. The nudge goes out at the
# cart's cutoff (the time the service's own contact caps count), so that is when it was decided.
_API_SQL = """
SELECT session_id,
       CASE WHEN action = 'none' THEN 'control' ELSE action END AS arm,
       CASE WHEN in_holdout THEN 'holdout' ELSE 'api' END AS chosen_by,
       1.0 AS propensity, 'api' AS policy_version,
       uplift_model_version AS model_version, cutoff_at AS decided_at
FROM decision_log
WHERE CAST(cutoff_at AS DATE) = CAST($day AS DATE) AND consent
QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY decision_log.decided_at DESC, request_id) = 1
ORDER BY session_id
"""

COLUMNS = (
    "session_id",
    "arm",
    "chosen_by",
    "propensity",
    "policy_version",
    "model_version",
    "decided_at",
)


def published_decisions(con: duckdb.DuckDBPyConnection, day: date | str) -> pd.DataFrame:
    """The decisions of `day`'s published plan (empty when none was published)."""
    if not has_table(con, "intervention_plan"):
        return pd.DataFrame(columns=list(COLUMNS))
    return con.execute(_DECISIONS_SQL, {"day": str(day)}).df()


def api_decisions(con: duckdb.DuckDBPyConnection, day: date | str) -> pd.DataFrame:
    """The decisions `/score` logged for `day`'s carts (empty when the service logged none)."""
    if not has_table(con, "decision_log"):
        return pd.DataFrame(columns=list(COLUMNS))
    return con.execute(_API_SQL, {"day": str(day)}).df()


def day_decisions(con: duckdb.DuckDBPyConnection, day: date | str) -> pd.DataFrame:
    """Every decision of `day`'s carts that the shop acted on: `/score`'s, made during the
    session, and the published plan's for the carts the service did not decide (a cart already
    answered in real time is not nudged again by the nightly plan)."""
    api, plan = api_decisions(con, day), published_decisions(con, day)
    plan = plan[~plan["session_id"].isin(api["session_id"])]
    parts = [p for p in (api, plan) if len(p)]
    if not parts:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(parts, ignore_index=True).sort_values("session_id", ignore_index=True)
