"""Uplift through Dagster on the demo storefront: risk model and scores, then the uplift model
(MLflow run, registered version, gates, Qini plots) and the day's intervention plan (every
scored cart once, zero rule violations, totals in the metadata, idempotent re-planning)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from cartintel_assets.decisions.catalogue import load_catalogue
from cartintel_assets.decisions.economics import action_table
from cartintel_assets.defs.abandonment.assets import abandonment_model, abandonment_scores
from cartintel_assets.defs.registry.assets import model_promotions
from cartintel_assets.defs.uplift.assets import (
    GATES,
    PLAN_CHECKS,
    intervention_plan,
    uplift_model,
)
from cartintel_assets.models.uplift import TARGETING_EXCLUDED, session_facts
from cartintel_assets.registry.names import UPLIFT_MODEL
from cartintel_assets.registry.registration import load_uplift_model
from cartintel_assets.registry.tracking import Store
from cartintel_assets.simulation.storefront import DEMO_STOREFRONT, Storefront
from cartintel_tests.conftest import asset_resources, check_results

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
LAST = DEMO_STOREFRONT.day(DEMO_STOREFRONT.days - 1).isoformat()


def _run(assets: list[Any], db: Path, mlruns: Path, instance: dg.DagsterInstance, **kw: Any) -> Any:
    return dg.materialize(
        assets,
        instance=instance,
        resources=asset_resources(db, mlruns),
        raise_on_error=False,
        **{"run_config": QUIET, **kw},
    )


def _move(
    db: Path, mlruns: Path, instance: dg.DagsterInstance, action: str, phase: str
) -> dict[str, Any]:
    """One gated move of cartintel-uplift; its materialisation's metadata."""
    config = {"model": "uplift", "action": action, "phase": phase, "triggered_by": "test"}
    result = _run(
        [model_promotions],
        db,
        mlruns,
        instance,
        run_config={**QUIET, "ops": {"model_promotions": {"config": config}}},
    )
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("model_promotions")[0].metadata.items()
    }
    assert result.success == (meta["outcome"] == "moved")
    return meta


def test_uplift_model_and_plan(
    demo_store: Storefront,
    demo_warehouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "wh.duckdb"
    shutil.copy(demo_warehouse, db)
    mlruns = tmp_path / "mlruns"
    with dg.instance_for_test() as instance:
        assert _run([abandonment_model], db, mlruns, instance).success
        assert _run([abandonment_scores], db, mlruns, instance, partition_key=LAST).success

        trained = _run([uplift_model], db, mlruns, instance)
        assert trained.success
        assert check_results(trained) == dict.fromkeys(GATES, True)
        meta = {
            k: v.value
            for k, v in trained.asset_materializations_for_node("uplift_model")[0].metadata.items()
        }
        assert meta["gate"] == "passed" and meta["model_version"] == "1"
        assert meta["rows_without_features"] == 0
        assert meta["rows_log"] == int(demo_store.truth_sessions["in_experiment"].sum())
        assert meta["plots"].count("data:image/png;base64,") == 2  # Qini and uplift curves
        assert meta["allowed_arms"] and meta["policy_value_dr"] > meta["top_k_by_risk_value_dr"]
        store = Store(f"sqlite:///{mlruns / 'mlflow.db'}")
        client = store.client
        version = client.get_model_version_by_alias(UPLIFT_MODEL, "challenger")
        assert version.tags["allowed_arms"] == ",".join(meta["allowed_arms"])
        run = client.get_run(meta["mlflow_run_id"])
        assert run.data.tags["dagster.run_id"] == trained.run_id
        assert run.data.params["learner"] in {"t-learner", "x-learner", "dr-learner"}
        assert run.data.params["excluded_for_targeting"] == ",".join(TARGETING_EXCLUDED)
        assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
            "plots/qini_curves.png",
            "plots/uplift_curves.png",
        }
        # the logged pyfunc serves effects per arm and the baseline
        served = store.load_pyfunc(f"models:/{UPLIFT_MODEL}@challenger")
        con = duckdb.connect(str(db), read_only=True)
        rows = con.execute("SELECT * FROM session_features ORDER BY session_id LIMIT 50").df()
        rows = rows.merge(session_facts(con), on="session_id", how="left")
        con.close()
        features = [c.name for c in served.metadata.signature.inputs.inputs]
        assert "region" not in features and "device" not in features
        registered = load_uplift_model(store, UPLIFT_MODEL, "challenger")
        assert registered.allowed_arms == meta["allowed_arms"]
        typed = registered.model.outcome["control"].typed(rows)
        out = pd.DataFrame(served.predict(typed))
        expected = registered.model.effects(typed)
        assert np.allclose(out[expected.columns].to_numpy(), expected.to_numpy())
        assert np.allclose(out["p_baseline"], registered.model.baseline(typed))
        # and the effect on expected margin per arm, with the catalogue's costs
        margins = action_table(
            typed, registered.model.baseline(typed), expected, load_catalogue(), 0.4
        )
        for arm in expected.columns:
            want = margins.loc[margins["arm"] == arm, "incremental_margin"].to_numpy()
            assert np.allclose(out[f"margin_{arm}"], want)

        # first rollout of the policy: its off-policy value's interval clears 0, so it moves to
        # pilot, logged; the plan then follows the pilot (no global version yet, so everywhere)
        moved = _move(db, mlruns, instance, "promote", "pilot")
        assert moved["outcome"] == "moved" and moved["to_version"] == "1", moved["reason"]
        assert float(version.tags["policy_value_dr_lo"]) > 0
        assert version.tags["compared_with_global"] == version.tags["compared_with_pilot"] == "none"
        assert str(client.get_model_version_by_alias(UPLIFT_MODEL, "pilot").version) == "1"

        planned = _run([intervention_plan], db, mlruns, instance, partition_key=LAST)
        for e in planned.all_events:
            if e.event_type_value == "ASSET_CHECK_EVALUATION":
                ev = e.event_specific_data
                print(ev.check_name, {k: v.value for k, v in ev.metadata.items()})  # type: ignore[union-attr]
        assert planned.success
        assert check_results(planned) == dict.fromkeys(PLAN_CHECKS, True)
        pm = {
            k: v.value
            for k, v in planned.asset_materializations_for_node("intervention_plan")[
                0
            ].metadata.items()
        }
        # plan and exploration share the budget (150 by default)
        assert "nudges" in pm["totals"] and pm["spend"] + pm["exploration_spend"] <= 150.0 + 1e-6
        assert pm["uplift_versions_by_alias"] == {"pilot": "1"}
        assert (
            pm["incremental_margin_lo"] <= pm["incremental_margin"] <= pm["incremental_margin_hi"]
        )
        con = duckdb.connect(str(db), read_only=True)
        plan = con.execute("SELECT * FROM intervention_plan WHERE partition_date = ?", [LAST]).df()
        scores = con.execute("SELECT session_id FROM abandonment_scores").df()
        con.close()
        # every scored cart once, with an action or a reason
        assert sorted(plan["session_id"]) == sorted(scores["session_id"])
        treated = plan["action"] != "none"
        assert treated.any() and (plan.loc[~treated, "reason"] != "").all()
        assert set(plan.loc[treated, "action"]) <= set(meta["allowed_arms"])
        assert not plan.loc[treated, "in_holdout"].any() and plan.loc[treated, "consent"].all()
        # the plan's own choices pay; exploration's are random, with their propensity logged
        chosen = plan["chosen_by"]
        assert (plan.loc[treated & (chosen == "plan"), "incremental_margin"] > 0).all()
        open_ = chosen.isin(["plan", "exploration"])
        # 10 % by default, lowered to what a quarter of the budget is expected to pay for
        share = pm["exploration_share"]
        assert 0.0 < share <= 0.10
        n_open = int(open_.sum())
        assert abs((chosen[open_] == "exploration").mean() - share) < 4 * np.sqrt(
            share * (1 - share) / n_open
        )
        assert plan.loc[open_, "propensity"].between(0, 1, inclusive="right").all()
        assert (plan.loc[chosen == "holdout", "action"] == "none").all()
        assert plan.loc[chosen == "", "propensity"].isna().all()
        assert set(plan["uplift_model_version"]) == {"1"} and set(plan["risk_model_version"]) == {
            "1"
        }
        truth = demo_store.truth_sessions.set_index("session_id")
        # carts bought in their session (return visits that buy an earlier cart are not in the
        # simulator's session truth, and buy by construction)
        bought = plan.loc[plan["reason"] == "bought in session", "session_id"]
        known = bought[bought.isin(truth.index)]
        assert len(known) > 100 and truth.loc[known, "purchased"].all()
        explored = plan["chosen_by"] == "exploration"
        assert np.isclose(plan.loc[~explored, "expected_cost"].sum(), pm["spend"])
        assert np.isclose(plan.loc[explored, "expected_cost"].sum(), pm["exploration_spend"])

        again = _run([intervention_plan], db, mlruns, instance, partition_key=LAST)
        assert again.success
        con = duckdb.connect(str(db), read_only=True)
        n = con.execute("SELECT count(*) FROM intervention_plan").fetchone()
        con.close()
        assert n is not None and n[0] == len(plan)  # re-planning replaces, never duplicates

        # the planner withdraws its own least valuable contacts to keep within the bound, but
        # exploration is uniform and stays: with none allowed and half the carts explored, the
        # gap cannot close and the blocking check fails
        strict = dg.materialize(
            [intervention_plan],
            instance=instance,
            resources=asset_resources(db, mlruns),
            partition_key=LAST,
            raise_on_error=False,
            run_config={
                **QUIET,
                "ops": {
                    "intervention_plan": {
                        "config": {
                            "disparity_bound": 0.0,
                            "exploration_share": 0.5,
                            "exploration_budget_share": 1.0,
                            "budget": 1e6,
                        }
                    }
                },
            },
        )
        assert not strict.success
        assert check_results(strict) == {PLAN_CHECKS[0]: True, PLAN_CHECKS[1]: False}
        # ... and the blocked plan is never published: the day keeps the plan that passed (the
        # one the service, the contact caps and the storefront read); the blocked one is kept
        # apart with the check it failed
        con = duckdb.connect(str(db), read_only=True)
        published = con.execute(
            "SELECT planned_by_run, count(*) FROM intervention_plan GROUP BY ALL"
        ).fetchall()
        blocked = con.execute(
            "SELECT planned_by_run, blocked_by, count(*) FROM blocked_intervention_plans"
            " WHERE partition_date = ? GROUP BY ALL",
            [LAST],
        ).fetchall()
        con.close()
        assert published == [(again.run_id, len(plan))]
        assert blocked == [(strict.run_id, PLAN_CHECKS[1], len(plan))]

        # to global it needs realised pilot results, and none has landed; nothing held pilot
        # before, so there is nothing to roll back to; both refusals are logged
        early = _move(db, mlruns, instance, "promote", "global")
        assert early["outcome"] == "refused" and "only 0 pilot decisions" in early["reason"]
        back = _move(db, mlruns, instance, "rollback", "pilot")
        assert back["outcome"] == "refused"
        con = duckdb.connect(str(db), read_only=True)
        moves = con.execute(
            "SELECT phase, action, outcome FROM promotion_log WHERE model_name = ?"
            " ORDER BY logged_at, rowid",
            [UPLIFT_MODEL],
        ).fetchall()
        con.close()
        assert moves == [
            ("pilot", "promote", "moved"),
            ("global", "promote", "refused"),
            ("pilot", "rollback", "refused"),
        ]

        # a consent withdrawal lands in the day's customers feed: the next plan obeys it
        monkeypatch.setenv("CARTINTEL_PSEUDONYM_KEY", "test-key")  # the warehouse's key
        _withdrawal_obeyed_by_the_next_plan(demo_store, demo_warehouse, db, mlruns, instance, plan)


def _withdrawal_obeyed_by_the_next_plan(
    store: Storefront,
    demo_warehouse: Path,
    db: Path,
    mlruns: Path,
    instance: dg.DagsterInstance,
    plan: pd.DataFrame,
) -> None:
    """A customer the plan contacts withdraws consent through the customers feed (a new row,
    landed and ingested by the ingestion asset): re-planned, none of their carts is contacted,
    with the reason; the other contacts stay."""
    from cartintel_assets.defs.ingestion.assets import ingestion_assets
    from cartintel_assets.resources import LandingResource

    landing = db.parent / "landing"
    shutil.copytree(demo_warehouse.parent / "landing", landing)
    feed = landing / LAST / "customers.parquet"
    landed = pd.read_parquet(feed)
    sessions = store.landing[LAST]["sessions"].set_index("session_id")["customer_id"]
    acted = plan.loc[plan["action"] != "none", "session_id"].map(sessions)
    raw = next(c for c in acted if c not in set(landed["customer_id"]))  # no record that day
    known = pd.concat(d["customers"] for d in store.landing.values())
    row = known[known["customer_id"] == raw].tail(1).assign(marketing_consent=False)
    pd.concat([landed, row[landed.columns]], ignore_index=True).to_parquet(feed, index=False)
    ingest = next(a for a in ingestion_assets if a.node_def.name == "ingest_customers")
    resources = asset_resources(db, mlruns, landing=LandingResource(root=str(landing)))
    assert dg.materialize(
        [ingest], instance=instance, resources=resources, partition_key=LAST, run_config=QUIET
    ).success
    assert _run([intervention_plan], db, mlruns, instance, partition_key=LAST).success
    con = duckdb.connect(str(db), read_only=True)
    after = con.execute("SELECT * FROM intervention_plan WHERE partition_date = ?", [LAST]).df()
    con.close()
    theirs = after["session_id"].map(sessions) == raw
    assert theirs.sum() >= 1 and (after.loc[theirs, "action"] == "none").all()
    assert (after.loc[theirs, "reason"] == "no marketing consent").all()
    assert not after.loc[theirs, "consent"].any()
    assert ((after["action"] != "none") & ~theirs).sum() > 0.5 * len(acted)  # the others stay
