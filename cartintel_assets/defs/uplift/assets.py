"""Uplift of each intervention on the randomised log (`cartintel-uplift`, gated) and the daily
intervention plan: the action per abandoned cart that pays, or none with the reason, within
budget, consent, contact caps, discount caps, the persistent holdout and the catalogue's
ethics rules."""

import hashlib
from datetime import date, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from cartintel_assets.decisions.catalogue import DEFAULT_CATALOGUE
from cartintel_assets.decisions.plan import latest_consent_sql
from cartintel_assets.decisions.settings import PlanSettings
from cartintel_assets.defs.partitions import daily_partitions
from cartintel_assets.registry.names import (
    ABANDONMENT_MODEL,
    CHALLENGER,
    GLOBAL,
    PILOT,
    UPLIFT_MODEL,
)
from cartintel_assets.resources import WarehouseResource
from cartintel_assets.resources.mlflow import MLflowResource
from cartintel_assets.resources.rollout import RolloutResource
from cartintel_assets.warehouse.tables import has_table, replace_partition, require_tables

EXPERIMENT = "cartintel/uplift"
GATES = (
    "uplift_policy_value_above_zero",
    "uplift_model_beats_top_k_by_risk",
    "uplift_targeting_beats_random",
)
PLAN_CHECKS = ("intervention_plan_within_rules", "intervention_plan_disparity_within_bound")


class UpliftModelConfig(dg.Config):
    """Learners compared, evaluation and the gate's settings."""

    learners: list[str] = Field(
        default=["t-learner", "x-learner", "dr-learner"],
        description="Meta-learners compared by Qini.",
    )
    folds: int = Field(default=5, ge=2, description="Cross-fitting folds.")
    bootstrap: int = Field(default=200, ge=50, description="Bootstrap replicates per interval.")
    margin_rate: float = Field(default=0.4, gt=0, le=1, description="Gross margin on cart value.")
    gate_budget_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Screening budget of the challenger gate: this share of what treating every"
        " cart that pays would cost. The move to pilot values the policy at the deployed plan's"
        " budget instead.",
    )
    risk_alias: str = Field(
        default=CHALLENGER, description="Alias of the risk model the top-k yardstick ranks by."
    )
    catalogue_path: str = Field(
        default=str(DEFAULT_CATALOGUE), description="The intervention catalogue (YAML)."
    )


@dg.asset(
    group_name="uplift",
    deps=["raw_interventions", "session_features", "customer_segments", "abandonment_model"],
    kinds={"xgboost", "mlflow"},
    check_specs=[dg.AssetCheckSpec(g, asset="uplift_model", blocking=True) for g in GATES],
)
def uplift_model(
    context: dg.AssetExecutionContext,
    config: UpliftModelConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
) -> Any:
    """Incremental effect of each intervention on buying an abandoned cart within 7 days.

    T-, X- and DR-learners on XGBoost are cross-fitted on the intervention log; the one whose
    policy the gate values most (of those passing; else the best mean Qini) is refit on the whole
    log and registered as a version of `cartintel-uplift`. The gate values the budgeted policy
    off-policy (doubly robust, out of fold) and keeps the arms that add to that value; the version
    gets the alias `challenger` only if that value is above 0, above top-k-by-risk's at the same
    budget, and its targeting beats the same arms given at random. The policy is also valued as
    it will run, at the deployed plan's budget over the log's days, against each policy in use
    (`global`, `pilot`), paired on the carts logged since each was trained: what the move to
    pilot asks.
    """
    from cartintel_assets.decisions.catalogue import load_catalogue
    from cartintel_assets.decisions.evaluation import Incumbent, uplift_gate
    from cartintel_assets.models.plots import markdown_image, markdown_table, uplift_figures
    from cartintel_assets.models.segmentation import with_segment_features
    from cartintel_assets.models.uplift import (
        LEARNERS,
        TARGETING_EXCLUDED,
        calibrated,
        cross_fit,
        effect_calibration,
        intervention_log,
        targeting_features,
        uplift_report,
    )
    from cartintel_assets.registry.registration import (
        current_segmentation,
        load_risk_model,
        load_uplift_model,
        log_uplift_model,
        register,
        version_by_alias,
    )

    unknown = set(config.learners) - set(LEARNERS)
    if unknown:
        raise ValueError(f"unknown learners {sorted(unknown)}; expected some of {sorted(LEARNERS)}")
    catalogue = load_catalogue(config.catalogue_path)
    with warehouse.reader() as con:
        require_tables(con, "raw_interventions", "session_features")
        log, missing = intervention_log(con)
    if log["treatment"].nunique() < 2:
        raise ValueError("the intervention log needs control and at least one arm: land more days")
    treatment, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    store = mlflow_tracking.store()
    # the shopper's segment as of the cart, from their earlier sessions: who a nudge moves
    # depends on who they are (none before the first segmentation)
    segmentation_version, segmentation = current_segmentation(store)
    log, segment_columns = with_segment_features(log, segmentation)
    num, cat = targeting_features()
    num += segment_columns
    fits, reports = {}, {}
    for learner in config.learners:
        context.log.info(f"cross-fitting the {learner} on {len(log):,} logged carts")
        fits[learner] = cross_fit(log, treatment, y, learner, num, cat, config.folds)
        reports[learner] = uplift_report(fits[learner].effects, treatment, y, config.bootstrap)
    risk_model = load_risk_model(store, ABANDONMENT_MODEL, config.risk_alias)
    risk = risk_model.model.predict_proba(log)
    # the policies a move to pilot must beat: those in use (`global`, and the `pilot` it would
    # replace), at the budget the plan runs with, on the carts logged since each was trained
    in_use = {a: version_by_alias(store, UPLIFT_MODEL, a) for a in (GLOBAL, PILOT)}
    incumbents, loaded = {}, {}
    for alias, version in in_use.items():
        if version is None:
            continue
        if version not in loaded:  # one version may hold both
            current = load_uplift_model(store, UPLIFT_MODEL, alias)
            loaded[version] = Incumbent(
                current.model.baseline(log),
                current.model.effects(log).reset_index(drop=True),
                current.allowed_arms,
                current.trained_through,
            )
        incumbents[alias] = loaded[version]
    trained_through = pd.to_datetime(log["partition_date"]).max().date()
    # margins need effect sizes, not just rankings: calibrate out of fold (Qini is unchanged);
    # then each learner's policy goes through the gate, valued off-policy
    calibrations, evidences = {}, {}
    for learner in config.learners:
        calibrations[learner] = effect_calibration(fits[learner], treatment, y)
        f = calibrated(fits[learner], calibrations[learner])
        evidences[learner] = uplift_gate(
            log,
            f.baseline,
            f.effects,
            risk,
            catalogue,
            config.margin_rate,
            config.gate_budget_share,
            config.bootstrap,
            incumbents,
            PlanSettings().deployed().budget,
        )
    # the decision is what matters: of the learners whose policy passes, the one it values most
    # at the screening budget (none passes: the best by mean Qini, registered without an alias).
    # Not by the value as deployed: its intervals are several times wider (the loop benchmark's
    # first policy chosen by it earned 4,891 in its first week; chosen here, 7,090)
    passing = [k for k, e in evidences.items() if e.passed]
    best = (
        max(passing, key=lambda k: evidences[k].policy.value)
        if passing
        else max(reports, key=lambda k: float(reports[k]["qini"].mean()))
    )
    report, calibration, evidence = reports[best], calibrations[best], evidences[best]
    fit = calibrated(fits[best], calibration)
    gate = "passed" if evidence.passed else "failed"
    context.log.info(f"refitting the {best} on the whole log")
    model = LEARNERS[best](log, treatment, y, num, cat)
    model.calibration = calibration
    model.use_segmentation(segmentation)
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(log[["assignment_id", "treatment", "converted_7d"]], index=False)
        .to_numpy()
        .tobytes()
    ).hexdigest()[:16]

    with store.run(store.experiment_id(EXPERIMENT), mlflow_tracking.run_tags(context)) as run:
        run.log_params(
            {
                "learner": best,
                "learners_compared": ",".join(config.learners),
                "folds": config.folds,
                "bootstrap": config.bootstrap,
                "margin_rate": config.margin_rate,
                "gate_budget_share": config.gate_budget_share,
                "features": len(model.features),
                "excluded_for_targeting": ",".join(TARGETING_EXCLUDED),
                "dataset_digest": digest,
                "risk_model_version": risk_model.version,
                "segmentation_version": segmentation_version or "none",
            }
        )
        versus = {
            f"vs_{alias}_dr{k}": getattr(v, f)
            for alias, v in evidence.versus.items()
            for k, f in (("", "value"), ("_lo", "lo"), ("_hi", "hi"), ("_support", "support"))
        }
        compared_on = {f"vs_{alias}_carts": v.carts for alias, v in evidence.versus.items()}
        run.log_metrics(
            {
                **versus,
                **compared_on,
                "policy_value_deployed_dr": evidence.deployed.value,
                "policy_value_deployed_dr_lo": evidence.deployed.lo,
                "policy_value_deployed_dr_hi": evidence.deployed.hi,
                "deployed_budget": evidence.deployed_budget,
                "rows_log": len(log) + missing,
                "rows_without_features": missing,
                "policy_value_dr": evidence.policy.value,
                "policy_value_dr_lo": evidence.policy.lo,
                "policy_value_dr_hi": evidence.policy.hi,
                "targeting_gain_dr": evidence.targeting.value,
                "targeting_gain_p_value": evidence.targeting.p_value,
                "top_k_by_risk_value_dr": evidence.top_k.value,
                "gate_budget": evidence.budget,
            }
        )
        for learner, rep in reports.items():
            run.log_metric(f"{learner}.policy_value_dr", evidences[learner].policy.value)
            run.log_metric(f"{learner}.policy_value_deployed_dr", evidences[learner].deployed.value)
            for arm, row in rep.iterrows():
                for k in (
                    "qini",
                    "qini_lo",
                    "qini_hi",
                    "auuc",
                    "auuc_lo",
                    "auuc_hi",
                    "uplift_at_10",
                    "uplift_at_30",
                ):
                    run.log_metric(f"{learner}.{arm}.{k}", float(row[k]))
        figures = uplift_figures(fit.effects, treatment, y)
        for name, fig in figures.items():
            run.log_figure(fig, f"plots/{name}")
        run.log_text(report.to_csv(), "uplift_report.csv")
        run.log_dict(
            {a: {"intercept": c[0], "slope": c[1]} for a, c in calibration.items()},
            "effect_calibration.json",
        )
        run.set_tag("gate", gate)
        model_uri = log_uplift_model(run, model, log, config.catalogue_path, config.margin_rate)
        version = register(
            store,
            model_uri,
            UPLIFT_MODEL,
            CHALLENGER if evidence.passed else None,
            {
                "gate": gate,
                "learner": best,
                "allowed_arms": ",".join(evidence.allowed_arms),
                "dagster.run_id": context.run.run_id,
                # what the move to pilot reads (promotion.judge_policy_candidate)
                "gate_budget": f"{evidence.budget:.2f}",
                "policy_value_dr": f"{evidence.policy.value:.2f}",
                "policy_value_dr_lo": f"{evidence.policy.lo:.2f}",
                "deployed_budget": f"{evidence.deployed_budget:.2f}",
                # the last day it learned from: later comparisons with it use only later carts
                "trained_through": trained_through.isoformat(),
                "policy_value_deployed_dr": f"{evidence.deployed.value:.2f}",
                "policy_value_deployed_dr_lo": f"{evidence.deployed.lo:.2f}",
                **{f"compared_with_{a}": v or "none" for a, v in in_use.items()},
                **{k: f"{v:.2f}" for k, v in versus.items()},
                **{k: str(v) for k, v in compared_on.items()},
            },
        )
    shown = report.reset_index()
    yield dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run.run_id,
            "model_version": version,
            "model_uri": f"models:/{UPLIFT_MODEL}/{version}",
            "learner": best,
            "gate": gate,
            "alias": CHALLENGER if evidence.passed else "none (gate failed)",
            "allowed_arms": dg.MetadataValue.json(evidence.allowed_arms),
            "excluded_arms": dg.MetadataValue.json(evidence.excluded_arms),
            "rows_log": len(log) + missing,
            "rows_without_features": missing,
            "mean_qini_by_learner": dg.MetadataValue.json(
                {k: round(float(r["qini"].mean()), 4) for k, r in reports.items()}
            ),
            "policy_value_dr_by_learner": dg.MetadataValue.json(
                {
                    k: {"value": round(e.policy.value, 2), "gate": e.passed}
                    for k, e in evidences.items()
                }
            ),
            "uplift_report": dg.MetadataValue.md(
                markdown_table(
                    shown,
                    ["arm", "qini", "qini_lo", "qini_hi", "auuc", "uplift_at_30", "ate", "n_arm"],
                )
            ),
            "policy_value_dr": evidence.policy.value,
            "policy_value_dr_interval": dg.MetadataValue.json(
                [round(evidence.policy.lo, 2), round(evidence.policy.hi, 2)]
            ),
            "top_k_by_risk_value_dr": evidence.top_k.value,
            "policy_value_deployed_dr": dg.MetadataValue.json(
                {
                    "budget": round(evidence.deployed_budget, 2),
                    "value": round(evidence.deployed.value, 2),
                    "interval": [round(evidence.deployed.lo, 2), round(evidence.deployed.hi, 2)],
                }
            ),
            "versus_policies_in_use_dr": dg.MetadataValue.json(
                {
                    alias: {
                        "version": in_use[alias],
                        "carts_since_its_training": v.carts,
                        "value": round(v.value, 2),
                        "interval": [round(v.lo, 2), round(v.hi, 2)],
                        # effective logged carts behind the weaker side where the two differ
                        "support": round(v.support, 1),
                    }
                    for alias, v in evidence.versus.items()
                }
            ),
            "effect_calibration": dg.MetadataValue.json(
                {
                    a: {"intercept": round(c[0], 4), "slope": round(c[1], 3)}
                    for a, c in calibration.items()
                }
            ),
            "plots": dg.MetadataValue.md(
                "\n\n".join(markdown_image(f, n.removesuffix(".png")) for n, f in figures.items())
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name=GATES[0],
        passed=bool(evidence.allowed_arms) and evidence.policy.value > 0,
        description="The budgeted policy's doubly robust value (out of fold) is above 0.",
        metadata={
            "policy_value_dr": evidence.policy.value,
            "policy_value_dr_lo": evidence.policy.lo,
            "policy_value_dr_hi": evidence.policy.hi,
            "carts_matched": evidence.policy.matched,
            "allowed_arms": dg.MetadataValue.json(evidence.allowed_arms),
            "excluded_arms": dg.MetadataValue.json(evidence.excluded_arms),
        },
    )
    yield dg.AssetCheckResult(
        check_name=GATES[1],
        passed=evidence.policy.value > evidence.top_k.value,
        metadata={
            "policy_value_dr": evidence.policy.value,
            "top_k_by_risk_value_dr": evidence.top_k.value,
            "top_k_by_risk_interval": dg.MetadataValue.json(
                [round(evidence.top_k.lo, 2), round(evidence.top_k.hi, 2)]
            ),
            "top_k_arm": evidence.top_k_arm,
            "budget": evidence.budget,
        },
    )
    yield dg.AssetCheckResult(
        check_name=GATES[2],
        passed=evidence.targeting.p_value < 0.05,
        description="What the targeting adds over handing out the same actions in the same"
        " proportions at random, cart by cart, beats 95 % of random allocations (p < 0.05).",
        metadata={
            "gain_over_random_dr": evidence.targeting.value,
            "random_allocations_95th": evidence.targeting.null_95,
            "p_value": evidence.targeting.p_value,
        },
    )


PLAN_COLUMNS: dict[str, str] = {
    "session_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "segment": "VARCHAR",
    "region": "VARCHAR",
    "device": "VARCHAR",
    "returning_customer": "BOOLEAN",
    "risk": "DOUBLE",
    "consent": "BOOLEAN",
    "in_holdout": "BOOLEAN",
    "send_at": "TIMESTAMP",
    "action": "VARCHAR",
    "intervention_id": "VARCHAR",
    "reason": "VARCHAR",
    "p_baseline": "DOUBLE",
    "p_treated": "DOUBLE",
    "incremental_conversion": "DOUBLE",
    "incremental_margin": "DOUBLE",
    "expected_cost": "DOUBLE",
    "uplift_model_version": "VARCHAR",
    "risk_model_version": "VARCHAR",
    "planned_by_run": "VARCHAR",
    "chosen_by": "VARCHAR",  # plan, exploration or holdout; empty: may not be contacted
    "propensity": "DOUBLE",  # the chance the logged choice had under the plan's policy
}
# a plan that failed a blocking check, kept for review: which checks it failed
BLOCKED_PLAN_COLUMNS: dict[str, str] = {**PLAN_COLUMNS, "blocked_by": "VARCHAR"}

# The day's scored carts with what the plan needs; a cart bought in its session needs nothing.
_CARTS_SQL = f"""
WITH bought AS (
    SELECT DISTINCT session_id FROM raw_events
    WHERE partition_date = $day AND event_type = 'purchase'
),
consent AS ({latest_consent_sql("$day")})
SELECT f.*, s.risk, s.model_version AS risk_model_version,
       b.session_id IS NOT NULL AS bought_in_session,
       coalesce(c.consent, false) AS consent
FROM abandonment_scores s
JOIN session_features f ON f.session_id = s.session_id AND f.partition_date = s.partition_date
LEFT JOIN bought b ON b.session_id = s.session_id
LEFT JOIN consent c ON c.customer_id = s.customer_id
WHERE s.partition_date = $day
ORDER BY s.session_id
"""

# Contacts that count towards the caps: the logged sends before the day and every other day's
# plan (a re-planned day replaces its own contacts; UNION: a planned contact the storefront
# acted on is also in its interventions feed, at the same time, and is one contact).
_HISTORY_SQL = """
SELECT customer_id, assigned_at AS sent_at FROM raw_interventions
WHERE treatment <> 'control' AND assigned_at < CAST($day AS TIMESTAMP)
"""
_PLAN_HISTORY_SQL = """
UNION SELECT customer_id, send_at FROM intervention_plan
WHERE action <> 'none' AND partition_date <> $day
"""
# what `/score` sent in real time (at the cart's cutoff, as the service's own caps count it)
# counts towards the caps too
_API_HISTORY_SQL = """
UNION SELECT customer_id, cutoff_at FROM decision_log
WHERE action <> 'none' AND CAST(cutoff_at AS DATE) <= CAST($day AS DATE)
"""


class InterventionPlanConfig(PlanSettings, dg.Config):
    """Budget, economics and the rules every plan obeys (unset fields come from the deployment
    file's `plan:` section, the one the scoring service reads too)."""

    uplift_alias: str | None = Field(
        default=None,
        description="Alias of cartintel-uplift for every cart; unset: by region, `pilot` in the"
        " pilot regions and `global` elsewhere (the `challenger` before any promotion).",
    )


@dg.asset(
    group_name="uplift",
    partitions_def=daily_partitions,
    deps=["abandonment_scores", "session_features", "uplift_model", "customer_segments"],
    kinds={"duckdb", "mlflow"},
    check_specs=[
        dg.AssetCheckSpec(c, asset="intervention_plan", blocking=True) for c in PLAN_CHECKS
    ],
)
def intervention_plan(
    context: dg.AssetExecutionContext,
    config: InterventionPlanConfig,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    rollout: RolloutResource,
) -> Any:
    """Per scored cart of the day, the intervention that maximises expected incremental margin,
    or none with the reason, within the day's budget, consent, contact caps, discount caps per
    segment and the persistent holdout; the catalogue is linted for manipulative designs first.
    Published only if its blocking checks (rules, disparity) pass; otherwise it goes to
    `blocked_intervention_plans` with the checks it failed, and nothing acts on it."""
    from cartintel_assets.decisions.economics import action_table
    from cartintel_assets.decisions.evaluation import (
        constraint_violations,
        intervention_rates,
        totals,
    )
    from cartintel_assets.decisions.log import api_decisions
    from cartintel_assets.decisions.plan import explore_and_choose, in_holdout, within_disparity
    from cartintel_assets.models.plots import markdown_table
    from cartintel_assets.models.uplift import session_facts
    from cartintel_assets.registry.promotion import aliases
    from cartintel_assets.registry.registration import load_uplift_model
    from cartintel_assets.warehouse.tables import typed_temp_table

    deployed = config.deployed()  # the deployment file under this run's explicit config
    catalogue = deployed.catalogue()  # refuses manipulative designs
    store = mlflow_tracking.store()
    phases, held = rollout.deployed().plan(), set(aliases(store, UPLIFT_MODEL))
    day = date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        require_tables(con, "abandonment_scores", "session_features", "raw_customers")
        carts = con.execute(_CARTS_SQL, {"day": day}).df()
        segments = (
            con.execute("SELECT customer_id, segment_name FROM customer_segments").df()
            if has_table(con, "customer_segments")
            else pd.DataFrame(columns=["customer_id", "segment_name"])
        )
        history_sql = (
            _HISTORY_SQL
            + (_PLAN_HISTORY_SQL if has_table(con, "intervention_plan") else "")
            + (_API_HISTORY_SQL if has_table(con, "decision_log") else "")
        )
        history = con.execute(history_sql, {"day": day}).df()
        facts = session_facts(con, day)
        answered = set(api_decisions(con, day)["session_id"])
    if carts.empty:
        context.log.warning(f"no scored carts on {day}: run abandonment_scoring_job for it first")
    seg = dict(zip(segments["customer_id"], segments["segment_name"], strict=True))
    carts["segment"] = carts["customer_id"].map(seg)
    carts["in_holdout"] = in_holdout(
        carts["customer_id"], rollout.deployed().holdout_share, deployed.holdout_salt
    )
    carts = carts.merge(facts, on="session_id", how="left")
    # a nudge goes out once the session is over
    ended = carts["session_ended_at"].fillna(carts["cutoff_at"])
    carts["send_at"] = ended + timedelta(minutes=deployed.send_delay_minutes)
    carts["blocked"] = np.select(
        [
            carts["bought_in_session"],
            ~carts["consent"],
            carts["session_id"].isin(answered),
            carts["in_holdout"],
        ],
        ["bought in session", "no marketing consent", "decided by /score", "holdout"],
        "",
    )
    rules = deployed.rules()
    # the policy of each cart's phase: pilot in the pilot regions, global elsewhere
    alias_of = np.array(
        [config.uplift_alias or phases.serving_alias(str(r), held) for r in carts["region"]],
        dtype=object,
    )
    models = {
        a: load_uplift_model(store, UPLIFT_MODEL, a)
        for a in dict.fromkeys(alias_of) or [config.uplift_alias or phases.serving_alias("", held)]
    }
    baseline = np.zeros(len(carts))
    effects = pd.DataFrame(0.0, index=carts.index, columns=[i.arm for i in catalogue])
    for alias, registered in models.items():
        rows = alias_of == alias
        if rows.any():
            baseline[rows] = registered.model.baseline(carts[rows])
            eff = registered.model.effects(carts[rows])
            effects.loc[rows, list(eff.columns)] = eff.to_numpy()
    usable = [i for i in catalogue if any(i.arm in m.allowed_arms for m in models.values())]
    options = action_table(carts, baseline, effects, usable, deployed.margin_rate)
    allowed_of = [set(models[a].allowed_arms) for a in alias_of]
    options = options[
        [arm in allowed_of[c] for c, arm in zip(options["cart"], options["arm"], strict=True)]
    ].reset_index(drop=True)
    versions = {a: m.version for a, m in models.items()}
    carts["returning_customer"] = carts["returning_customer"].astype(bool)
    # disparity: intervention rates among the carts that could be contacted at all
    open_carts = ~carts["bought_in_session"].to_numpy()
    groups = carts.assign(customer=np.where(carts["returning_customer"], "returning", "new")).loc[
        open_carts, ["region", "device", "customer"]
    ]
    explored_plan = explore_and_choose(
        carts,
        options,
        rules,
        history,
        deployed.exploration_share,
        deployed.exploration_salt,
        deployed.exploration_budget_share,
    )
    exploration_share = float(explored_plan.attrs["exploration_share"])
    plan = within_disparity(
        explored_plan, groups, deployed.disparity_bound, deployed.min_group_size
    )
    violations = constraint_violations(plan, carts, rules, history, catalogue)
    total = totals(plan, carts, deployed.margin_rate)
    rates, gaps = {}, {}
    for by in ("region", "device", "customer"):
        r = intervention_rates(plan.loc[open_carts], groups, by)
        rates[by] = {str(k): round(float(v), 4) for k, v in r["mean"].items()}
        big = r[r["size"] >= deployed.min_group_size]["mean"]
        gaps[by] = float(big.max() - big.min()) if len(big) > 1 else 0.0
    worst = max(gaps.values(), default=0.0)
    passed = {
        PLAN_CHECKS[0]: sum(violations.values()) == 0,
        PLAN_CHECKS[1]: worst <= deployed.disparity_bound,
    }
    blocked_by = [c for c, ok in passed.items() if not ok]
    out = pd.concat([carts.drop(columns=["blocked"]), plan], axis=1).assign(
        uplift_model_version=[versions[a] for a in alias_of],
        planned_by_run=context.run.run_id,
        blocked_by=",".join(blocked_by),
    )
    # a plan that fails a blocking check is never published: the service, the contact history
    # and the storefront read only `intervention_plan`; the blocked one is kept for review
    table, columns = (
        ("blocked_intervention_plans", BLOCKED_PLAN_COLUMNS)
        if blocked_by
        else ("intervention_plan", PLAN_COLUMNS)
    )
    with warehouse.get_connection() as con:
        typed_temp_table(con, out[list(columns)], columns, "_intervention_plan")
        replace_partition(con, table, "_intervention_plan", day)
    if blocked_by:
        context.log.error(
            f"the plan of {day} fails {blocked_by}: not published (kept in {table});"
            " the service, the contact caps and the storefront ignore it"
        )
    actions = plan["action"].value_counts()
    reasons = plan.loc[plan["action"] == "none", "reason"].value_counts()
    treated = out[out["action"] != "none"].nlargest(10, "incremental_margin")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(out),
            "published": not blocked_by,
            "table": table,
            "uplift_versions_by_alias": dg.MetadataValue.json(versions),
            "allowed_arms": dg.MetadataValue.json({a: m.allowed_arms for a, m in models.items()}),
            "budget": deployed.budget,
            "exploration_share": round(exploration_share, 6),
            **{k: float(v) if isinstance(v, float) else int(v) for k, v in total.items()},
            "actions": dg.MetadataValue.json({str(k): int(v) for k, v in actions.items()}),
            "reasons_for_none": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
            "intervention_rates": dg.MetadataValue.json(rates),
            "totals": dg.MetadataValue.md(
                f"**{total['treated']:,} nudges**, expected spend"
                f" {total['spend'] + total['exploration_spend']:.2f} of {deployed.budget:.2f}"
                f" (exploration: {total['explored']:,} carts, {exploration_share:.1%} of the"
                f" contactable, {total['exploration_spend']:.2f}); incremental conversions"
                f" {total['incremental_conversions']:.1f}"
                f" (95 % {total['incremental_conversions_lo']:.1f} to"
                f" {total['incremental_conversions_hi']:.1f}); incremental margin"
                f" {total['incremental_margin']:.2f} (95 % {total['incremental_margin_lo']:.2f} to"
                f" {total['incremental_margin_hi']:.2f})"
            ),
            "best_nudges": dg.MetadataValue.md(
                markdown_table(  # no session id (contracts.SUBJECT_LINKED_COLUMNS)
                    treated, ["segment", "risk", "action", "incremental_margin"]
                )
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name=PLAN_CHECKS[0],
        passed=passed[PLAN_CHECKS[0]],
        metadata={k: int(v) for k, v in violations.items()},
    )
    yield dg.AssetCheckResult(
        check_name=PLAN_CHECKS[1],
        passed=passed[PLAN_CHECKS[1]],
        metadata={
            "bound": deployed.disparity_bound,
            **{f"gap_{k}": round(v, 4) for k, v in gaps.items()},
            "rates": dg.MetadataValue.json(rates),
        },
    )
