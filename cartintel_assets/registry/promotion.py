"""Moving a registered model through the roadmap's phases, challenger -> pilot -> global, only
through gates, with an append-only promotion log that is the alias history MLflow does not keep.

No Dagster import. One naming scheme: `challenger` (passed its training gates, eligible),
`pilot` (serves the pilot regions), `global` (serves every other region). The MLflow store is
passed in by the caller.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.registry.names import (
    CERTIFIED_TAG,
    CHALLENGER,
    ERASED_SINCE_TAG,
    ERASED_TAG,
    GLOBAL,
    PHASES,
    PILOT,
)
from cartintel_assets.registry.registration import set_alias, version_by_alias
from cartintel_assets.registry.tracking import Store
from cartintel_assets.settings import crash_point
from cartintel_assets.warehouse.tables import has_columns, has_table, transaction

LOG_TABLE = "promotion_log"
LOG_COLUMNS: dict[str, str] = {
    "logged_at": "TIMESTAMP",
    "model_name": "VARCHAR",
    "phase": "VARCHAR",
    "action": "VARCHAR",  # promote | rollback
    "outcome": "VARCHAR",  # moved | refused
    "from_version": "VARCHAR",
    "to_version": "VARCHAR",
    "triggered_by": "VARCHAR",
    "reason": "VARCHAR",
    "evidence": "VARCHAR",  # JSON
    "dagster_run_id": "VARCHAR",
}


@dataclass(frozen=True)
class PhasePlan:
    """Which regions pilot a new version and the bounds each move must meet."""

    pilot_regions: tuple[str, ...] = ("NL", "ES")
    # to pilot: the candidate must beat the global version on the same held-out carts, ranking
    # better by a margin without materially worse probabilities
    pilot_min_auc_gain: float = 0.005
    pilot_max_log_loss_ratio: float = 1.02
    # to global: the pilot's realised results on the pilot regions
    global_min_labelled: int = 300
    global_min_roc_auc: float = 0.75
    global_max_calibration_error: float = 0.08
    # the interventions on the pilot's riskier half may not significantly lose conversions: the
    # upper end of the 95 % interval of (treated - holdout) must reach this
    global_min_incremental_conversion: float = 0.0
    global_max_auc_gap: float = 0.12  # across devices and across pilot regions
    min_group_rows: int = 100
    # a version that learned from rows erased since: refused this many days after the erasure,
    # unless retrained (a new version without them) or certified (README "Privacy")
    erasure_grace_days: float = 30.0

    def serving_alias(self, region: str, available: set[str]) -> str:
        """The alias that scores a cart of `region`: pilot in pilot regions (when one exists),
        global elsewhere; until a version holds global the pilot serves every region, and before
        any promotion the challenger does."""
        if region in self.pilot_regions and PILOT in available:
            return PILOT
        if GLOBAL in available:
            return GLOBAL
        if PILOT in available:
            return PILOT
        return CHALLENGER


@dataclass
class GateResult:
    """Whether a move may happen, why, and the numbers behind it."""

    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Move:
    """One line of the promotion log."""

    model_name: str
    phase: str
    action: str
    outcome: str
    from_version: str | None
    to_version: str | None
    triggered_by: str
    reason: str
    evidence: dict[str, Any]
    dagster_run_id: str
    logged_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["evidence"] = json.dumps(self.evidence, default=_json_default, sort_keys=True)
        return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def aliases(store: Store, name: str) -> dict[str, str]:
    """Every phase alias of `name` that is set, with its version."""
    found = {a: version_by_alias(store, name, a) for a in PHASES}
    return {a: v for a, v in found.items() if v is not None}


def ensure_log(con: duckdb.DuckDBPyConnection) -> None:
    cols = ", ".join(f"{c} {t}" for c, t in LOG_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ({cols})")


def read_log(con: duckdb.DuckDBPyConnection, name: str | None = None) -> pd.DataFrame:
    """The promotion log, oldest first (empty with its columns when nothing moved yet)."""
    if not has_table(con, LOG_TABLE):
        return pd.DataFrame(columns=list(LOG_COLUMNS))
    where, params = ("WHERE model_name = ?", [name]) if name else ("", [])
    return con.execute(f"SELECT * FROM {LOG_TABLE} {where} ORDER BY logged_at, rowid", params).df()


def record(con: duckdb.DuckDBPyConnection, store: Store, move: Move) -> None:
    """Append a move to the log (never update, never delete) and, when it moved an alias, then
    move the alias and tag the version it moved to. The log row comes first, in its own
    transaction: a process killed after it leaves the registry behind the log, never an alias
    moved without its row, and the next `reconcile` moves the alias the row records."""
    ensure_log(con)
    row = move.row()
    with transaction(con):
        con.execute(
            f"INSERT INTO {LOG_TABLE} ({', '.join(LOG_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in LOG_COLUMNS)})",
            [row[c] for c in LOG_COLUMNS],
        )
    crash_point("promotion.logged")
    if move.outcome == "moved" and move.to_version is not None:
        _apply(store, move)


def _apply(store: Store, move: Move) -> None:
    """Point the move's alias at its version and tag that version with the move."""
    assert move.to_version is not None
    set_alias(store, move.model_name, move.phase, move.to_version)
    prefix = f"{move.phase}."
    tags = {
        f"{prefix}{move.action}_at": move.logged_at.isoformat(timespec="seconds"),
        f"{prefix}from_version": move.from_version or "none",
        f"{prefix}triggered_by": move.triggered_by,
        f"{prefix}dagster_run_id": move.dagster_run_id,
        f"{prefix}evidence": move.row()["evidence"][:4900],
    }
    for k, v in tags.items():
        store.client.set_model_version_tag(move.model_name, move.to_version, k, v)


def reconcile(con: duckdb.DuckDBPyConnection, store: Store, name: str) -> list[Move]:
    """Bring the registry's phase aliases of `name` to what the log's latest move of each phase
    records (a move whose process died between its row and its alias); the moves replayed."""
    log = read_log(con, name)
    moved = log[log["outcome"] == "moved"]
    replayed = []
    for phase, rows in moved.groupby("phase"):
        last = rows.iloc[-1]
        if version_by_alias(store, name, str(phase)) == last["to_version"]:
            continue
        fields: dict[str, Any] = {c: (None if pd.isna(last[c]) else last[c]) for c in LOG_COLUMNS}
        fields["evidence"] = json.loads(fields["evidence"] or "{}")
        fields["logged_at"] = pd.Timestamp(fields["logged_at"]).to_pydatetime()
        move = Move(**fields)
        _apply(store, move)
        replayed.append(move)
    return replayed


def registry_agrees(
    con: duckdb.DuckDBPyConnection, store: Store, name: str
) -> dict[str, tuple[str | None, str | None]]:
    """Per phase moved through the log: (the log's latest version, the registry alias's); the
    two agree when every pair is equal."""
    log = read_log(con, name)
    moved = log[log["outcome"] == "moved"]
    out: dict[str, tuple[str | None, str | None]] = {}
    for phase, rows in moved.groupby("phase"):
        out[str(phase)] = (rows.iloc[-1]["to_version"], version_by_alias(store, name, str(phase)))
    return out


def previous_version(
    con: duckdb.DuckDBPyConnection, store: Store, name: str, phase: str
) -> str | None:
    """The version the latest promotion into the current holder of `phase` replaced."""
    current = version_by_alias(store, name, phase)
    log = read_log(con, name)
    promoted = log[
        (log["phase"] == phase)
        & (log["action"] == "promote")
        & (log["outcome"] == "moved")
        & (log["to_version"] == current)
    ]
    if promoted.empty:
        return None
    before = promoted.iloc[-1]["from_version"]
    return None if before is None or pd.isna(before) else str(before)


def erasure_gate(
    tags: dict[str, str], plan: PhasePlan, now: datetime | None = None
) -> GateResult | None:
    """Refusal of a version that learned from erased rows, once the grace period is over and
    nobody certified it (None: this gate does not stand in the way)."""
    since = tags.get(ERASED_SINCE_TAG)
    if not since or tags.get(CERTIFIED_TAG):
        return None
    erased = datetime.fromisoformat(since)
    now = now or datetime.now(erased.tzinfo)
    if now - erased <= timedelta(days=plan.erasure_grace_days):
        return None
    return GateResult(
        False,
        f"trained on rows erased since {since} (erasures {tags.get(ERASED_TAG)}), over the"
        f" {plan.erasure_grace_days:g}-day grace period: retrain without them, or certify the"
        f" version with the tag {CERTIFIED_TAG!r}",
        {ERASED_SINCE_TAG: since, ERASED_TAG: tags.get(ERASED_TAG)},
    )


# ---- the evidence behind each gate -----------------------------------------------------------

_WINDOW_SQL = """
SELECT f.*, l.harmful
FROM session_features f JOIN abandonment_labels l USING (session_id)
WHERE l.label_complete AND f.started_at >= CAST(? AS TIMESTAMP)
ORDER BY f.started_at, f.session_id
"""


def held_out_window(con: duckdb.DuckDBPyConnection, test_from: str) -> pd.DataFrame:
    """Labelled carts from the candidate's first test day on: neither model trained on them (the
    global version is older than the candidate)."""
    return con.execute(_WINDOW_SQL, [test_from]).df()


def compare_on_window(
    window: pd.DataFrame, candidate_p: np.ndarray, incumbent_p: np.ndarray, plan: PhasePlan
) -> GateResult:
    """Pilot gate: the candidate beats the incumbent on the same carts, on ranking (ROC-AUC gain
    at least `pilot_min_auc_gain`) and on probabilities (log-loss at most
    `pilot_max_log_loss_ratio` times the incumbent's)."""
    from cartintel_assets.models.abandonment import risk_metrics

    y = window["harmful"].to_numpy(dtype=int)
    cand, inc = risk_metrics(y, candidate_p), risk_metrics(y, incumbent_p)
    gain = cand["roc_auc"] - inc["roc_auc"]
    ratio = cand["log_loss"] / inc["log_loss"]
    evidence = {
        "window_carts": len(y),
        "window_from": str(window["started_at"].min()),
        "window_to": str(window["started_at"].max()),
        "candidate_roc_auc": cand["roc_auc"],
        "global_roc_auc": inc["roc_auc"],
        "candidate_log_loss": cand["log_loss"],
        "global_log_loss": inc["log_loss"],
        "auc_gain": gain,
        "log_loss_ratio": ratio,
        "min_auc_gain": plan.pilot_min_auc_gain,
        "max_log_loss_ratio": plan.pilot_max_log_loss_ratio,
    }
    problems = []
    if gain < plan.pilot_min_auc_gain:
        problems.append(f"ROC-AUC gain {gain:+.4f} < {plan.pilot_min_auc_gain:+.4f}")
    if ratio > plan.pilot_max_log_loss_ratio:
        problems.append(f"log-loss ratio {ratio:.4f} > {plan.pilot_max_log_loss_ratio:.4f}")
    if problems:
        return GateResult(
            False, "does not beat global on the held-out window: " + "; ".join(problems), evidence
        )
    return GateResult(
        True, f"beats global on {len(y)} held-out carts (ROC-AUC {gain:+.4f})", evidence
    )


DISPARITY_GROUPS: tuple[str, ...] = ("device", "region")
_PILOT_SQL = """
SELECT s.session_id, s.risk, f.region, f.device, l.harmful,
       i.treatment, i.converted_7d
FROM abandonment_scores s
JOIN session_features f USING (session_id)
JOIN abandonment_labels l USING (session_id)
LEFT JOIN raw_interventions i USING (session_id)
WHERE s.model_name = ? AND s.model_version = ? AND s.model_alias = 'pilot' AND l.label_complete
"""


def pilot_results(con: duckdb.DuckDBPyConnection, name: str, version: str) -> pd.DataFrame:
    """Carts the pilot version scored in its pilot phase whose outcomes are final, with the
    randomised intervention each received (if any); none before any day was scored."""
    if not has_table(con, "abandonment_scores"):
        return pd.DataFrame(columns=["session_id", "risk", "region", "device", "harmful"])
    return con.execute(_PILOT_SQL, [name, version]).df()


def judge_pilot(results: pd.DataFrame, plan: PhasePlan) -> GateResult:
    """Global gate: the pilot's realised risk-model performance on its regions, the incremental
    conversion of intervened carts against the randomised holdout (control) where the pilot
    would act, and the gap in ROC-AUC across devices and across pilot regions."""
    from cartintel_assets.models.abandonment import risk_metrics

    pilot = results[results["region"].isin(plan.pilot_regions)]
    n = len(pilot)
    evidence: dict[str, Any] = {"pilot_regions": list(plan.pilot_regions), "labelled_carts": n}
    if n < plan.global_min_labelled or pilot["harmful"].nunique() < 2:
        return GateResult(
            False,
            f"only {n} pilot carts with final outcomes (need {plan.global_min_labelled})",
            evidence,
        )
    y, p = pilot["harmful"].to_numpy(dtype=int), pilot["risk"].to_numpy(dtype=float)
    m = risk_metrics(y, p)
    evidence.update(roc_auc=m["roc_auc"], calibration_error=m["calibration_error"])
    # incrementality where the pilot would act: its riskier half, intervened vs the holdout
    acted = pilot[pilot["risk"] >= pilot["risk"].median()].dropna(subset=["treatment"])
    treated = acted[acted["treatment"] != "control"]["converted_7d"].astype(float)
    control = acted[acted["treatment"] == "control"]["converted_7d"].astype(float)
    lift = float(treated.mean() - control.mean()) if len(treated) and len(control) else float("nan")
    se = float(np.sqrt(treated.var() / max(len(treated), 1) + control.var() / max(len(control), 1)))
    high = lift + 1.96 * se
    evidence.update(
        treated=len(treated),
        holdout=len(control),
        incremental_conversion=lift,
        incremental_conversion_ci95=[lift - 1.96 * se, high],
        incremental_conversions=lift * len(treated) if np.isfinite(lift) else None,
    )
    gaps: dict[str, float] = {}
    for col in DISPARITY_GROUPS:
        aucs = {}
        for value, g in pilot.groupby(col):
            if len(g) >= plan.min_group_rows and g["harmful"].nunique() == 2:
                aucs[str(value)] = risk_metrics(
                    g["harmful"].to_numpy(dtype=int), g["risk"].to_numpy()
                )["roc_auc"]
        evidence[f"roc_auc_by_{col}"] = aucs
        gaps[col] = max(aucs.values()) - min(aucs.values()) if len(aucs) > 1 else 0.0
    evidence["auc_gap"] = gaps
    problems = []
    if m["roc_auc"] < plan.global_min_roc_auc:
        problems.append(f"pilot ROC-AUC {m['roc_auc']:.3f} < {plan.global_min_roc_auc:.3f}")
    if m["calibration_error"] > plan.global_max_calibration_error:
        problems.append(
            f"pilot calibration error {m['calibration_error']:.3f} > {plan.global_max_calibration_error:.3f}"
        )
    if not np.isfinite(high) or high < plan.global_min_incremental_conversion:
        problems.append(
            f"incremental conversion vs holdout {lift:+.3f} (95 % interval up to {high:+.3f})"
            f" is below {plan.global_min_incremental_conversion:+.3f}"
        )
    for col, gap in gaps.items():
        if gap > plan.global_max_auc_gap:
            problems.append(f"ROC-AUC gap across {col} {gap:.3f} > {plan.global_max_auc_gap:.3f}")
    return _verdict(
        problems,
        f"pilot on {n} carts: ROC-AUC {m['roc_auc']:.3f}, calibration error"
        f" {m['calibration_error']:.3f}, incremental conversion {lift:+.3f}",
        evidence,
    )


def _verdict(problems: list[str], passed: str, evidence: dict[str, Any]) -> GateResult:
    """A global gate's result: refused with every bound its pilot missed, or `passed`."""
    if problems:
        return GateResult(
            False, "pilot results miss their bounds: " + "; ".join(problems), evidence
        )
    return GateResult(True, passed, evidence)


# ---- the uplift policy's gates (cartintel-uplift with the plan it drives) -------------------


# The fewest effective logged carts (`ope.PolicyValue.support`) a comparison with a policy in use
# may rest on where the two policies differ. On the closed-loop benchmark's log (seed 7, 7,000
# sessions a day), where the plan decides and exploration gives each arm a ~0.3-0.5 % chance,
# two retrained versions were compared with the pilot on ~59 and ~6 effective carts (a few
# explored carts weighted ~250-350 each): their paired estimates were +118k and +41k, their
# intervals from +13.6k and +3.7k, and the truth +4.0k and -10.9k. Both were promoted; the
# second's week earned 1,864 against the previous week's 10,251.
MIN_COMPARISON_SUPPORT = 100.0


def judge_policy_candidate(tags: dict[str, str], in_use: dict[str, str | None]) -> GateResult:
    """Pilot gate of an uplift version, from what its training measured on the logged decisions
    (`evaluation.uplift_gate`, tagged on the version). `in_use`: the versions holding `global`
    and `pilot` now (None: none). It must beat each policy in use, valued as it will run (at the
    deployed plan's budget) and paired on the carts logged since that policy was trained, with
    the interval's lower bound above 0, and with enough logged evidence where the two policies
    differ (`MIN_COMPARISON_SUPPORT`): a retrained version replaces the pilot only if it would
    earn more. With none in use (the
    first rollout), its own off-policy value's lower bound must be above 0. A comparison made
    against other versions than today's is stale: the candidate must be retrained."""
    held = {alias: v for alias, v in in_use.items() if v is not None}
    if not held:
        lo, value = float(tags.get("policy_value_dr_lo", "nan")), tags.get("policy_value_dr")
        evidence: dict[str, Any] = {
            GLOBAL: None,
            PILOT: None,
            "policy_value_dr": value,
            "policy_value_dr_lo": lo,
        }
        if not lo > 0:
            return GateResult(
                False,
                f"first rollout: the policy's off-policy value {value} has a 95 % interval"
                f" reaching {lo:.2f}, not above 0",
                evidence,
            )
        return GateResult(
            True, f"first rollout: off-policy value {value} (95 % from {lo:.2f})", evidence
        )
    evidence = {"deployed_budget": tags.get("deployed_budget")}
    reasons = []
    for alias, version in held.items():
        compared = tags.get(f"compared_with_{alias}", "none")
        evidence |= {
            f"{alias}_version": version,
            f"compared_with_{alias}": compared,
            **{
                k: tags.get(k)
                for k in (
                    f"vs_{alias}_dr",
                    f"vs_{alias}_dr_lo",
                    f"vs_{alias}_dr_hi",
                    f"vs_{alias}_dr_support",
                )
            },
        }
        if compared != version:
            return GateResult(
                False,
                f"its training compared it with {alias} version {compared}, but {alias} is now"
                f" version {version}: retrain (uplift_training_job) to compare with it",
                evidence,
            )
        if f"vs_{alias}_dr_lo" not in tags:
            return GateResult(
                False,
                f"no cart was logged after {alias} version {version} was trained to compare it"
                " with (an incumbent is only compared on carts it did not learn from): let the"
                " plan act, then retrain",
                evidence,
            )
        if f"vs_{alias}_dr_support" not in tags:
            return GateResult(
                False,
                f"its comparison with {alias} version {version} does not say how much logged"
                " evidence it rests on (trained before that was measured): retrain"
                " (uplift_training_job)",
                evidence,
            )
        support = float(tags[f"vs_{alias}_dr_support"])
        if not support >= MIN_COMPARISON_SUPPORT:
            return GateResult(
                False,
                f"its comparison with {alias} version {version}'s policy rests on too few logged"
                f" decisions where the two differ: {support:.0f} effective carts on the weaker"
                f" side, at least {MIN_COMPARISON_SUPPORT:.0f} needed (exploration adds them)",
                evidence,
            )
        lo = float(tags[f"vs_{alias}_dr_lo"])
        if not lo > 0:
            return GateResult(
                False,
                f"its off-policy value over {alias} version {version}'s policy at the deployed"
                f" budget is {tags.get(f'vs_{alias}_dr')} with a 95 % interval reaching"
                f" {lo:.2f}, not above 0",
                evidence,
            )
        reasons.append(
            f"beats {alias} version {version}'s policy off-policy by"
            f" {tags.get(f'vs_{alias}_dr')} (95 % from {lo:.2f})"
        )
    return GateResult(
        True, "; ".join(reasons) + " at the deployed budget on the same logged carts", evidence
    )


_POLICY_SQL = """
SELECT i.session_id, i.treatment, i.converted_7d, i.chosen_by, i.model_version,
       CAST(i.assigned_at AS DATE) AS day, f.region, f.cart_value, f.shipping_cost
FROM raw_interventions i JOIN session_features f USING (session_id)
WHERE i.chosen_by IN ('plan', 'exploration', 'holdout') AND i.model_version IS NOT NULL
"""
_BLOCKED_SQL = """
SELECT count(DISTINCT partition_date) FROM blocked_intervention_plans
WHERE uplift_model_version = ? AND region IN (SELECT unnest(?))
"""


def policy_results(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every logged decision the plan made (plan, exploration, holdout) with the uplift version
    behind it, its realised outcome, region and cart; empty before the plan acted."""
    logged = has_columns(con, "raw_interventions", "chosen_by", "model_version")
    if not (logged and has_table(con, "session_features")):
        return pd.DataFrame(columns=["session_id", "chosen_by", "model_version", "region", "day"])
    return con.execute(_POLICY_SQL).df()


def blocked_plan_days(con: duckdb.DuckDBPyConnection, version: str, regions: list[str]) -> int:
    """Days whose plan by `version` for carts of `regions` was blocked (rules or disparity)."""
    if not has_table(con, "blocked_intervention_plans"):
        return 0
    return int(con.execute(_BLOCKED_SQL, [version, regions]).fetchone()[0])  # type: ignore[index]


def judge_policy_pilot(
    results: pd.DataFrame,
    realised: np.ndarray,
    candidate: str,
    incumbent: str | None,
    plan: PhasePlan,
    blocked_days: int,
) -> GateResult:
    """Global gate of an uplift version: in the pilot regions, the realised incremental margin
    per cart of its decisions against the persistent holdout is significantly above 0 (95 %
    lower bound), and not significantly below what the `global` version realised elsewhere over
    the same days; none of its pilot plans was blocked (rules, disparity bound)."""
    from cartintel_assets.decisions.evaluation import incremental_margin

    version = results["model_version"].astype(str).to_numpy()
    in_pilot = results["region"].isin(plan.pilot_regions).to_numpy()
    mine = (version == candidate) & in_pilot
    days = set(results.loc[mine, "day"])
    lift, se, n_policy, n_holdout = incremental_margin(results[mine], realised[mine])
    evidence: dict[str, Any] = {
        "pilot_regions": list(plan.pilot_regions),
        "pilot_days": len(days),
        "policy_carts": n_policy,
        "holdout_carts": n_holdout,
        "incremental_margin_per_cart": lift,
        "incremental_margin_ci95": [lift - 1.96 * se, lift + 1.96 * se],
        "blocked_plan_days": blocked_days,
    }
    if n_policy + n_holdout < plan.global_min_labelled or n_holdout < 30:
        return GateResult(
            False,
            f"only {n_policy + n_holdout} pilot decisions ({n_holdout} in the holdout) with"
            f" outcomes: need {plan.global_min_labelled} and 30 in the holdout",
            evidence,
        )
    problems = []
    if not lift - 1.96 * se > 0:
        problems.append(
            f"realised incremental margin {lift:+.2f} per cart vs the holdout (95 % from"
            f" {lift - 1.96 * se:+.2f}) is not significantly above 0"
        )
    if incumbent is not None:
        theirs = (version == incumbent) & ~in_pilot & results["day"].isin(days).to_numpy()
        g_lift, g_se, g_policy, g_holdout = incremental_margin(results[theirs], realised[theirs])
        evidence.update(
            global_version=incumbent,
            global_policy_carts=g_policy,
            global_holdout_carts=g_holdout,
            global_incremental_margin_per_cart=g_lift,
        )
        gap_hi = lift - g_lift + 1.96 * float(np.hypot(se, g_se))
        if np.isfinite(gap_hi) and gap_hi < 0:
            problems.append(
                f"significantly worse than global version {incumbent} over the same days"
                f" ({lift:+.2f} vs {g_lift:+.2f} per cart)"
            )
    if blocked_days:
        problems.append(f"{blocked_days} of its pilot days' plans were blocked")
    return _verdict(
        problems,
        f"pilot on {n_policy + n_holdout} decisions over {len(days)} days: realised incremental"
        f" margin {lift:+.2f} per cart vs the holdout (95 % from {lift - 1.96 * se:+.2f})",
        evidence,
    )
