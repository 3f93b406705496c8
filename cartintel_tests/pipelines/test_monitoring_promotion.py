"""Drift monitoring, drift-driven retraining and promotion challenger -> pilot -> global, end to
end on a storefront whose shipping costs double in DE from day 14 (the simulator's truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest

from cartintel_assets.cli import main
from cartintel_assets.contracts.schema import TABLES
from cartintel_assets.definitions import defs
from cartintel_assets.defs.abandonment.assets import (
    abandonment_model,
    abandonment_scores,
)
from cartintel_assets.defs.monitoring.assets import (
    DRIFT_CHECKS,
    PERFORMANCE_CHECK,
    abandonment_drift,
    abandonment_performance,
)
from cartintel_assets.defs.monitoring.sensors import abandonment_retraining_sensor
from cartintel_assets.defs.registry.assets import GATE_CHECK, model_promotions
from cartintel_assets.features.labels import RETURN_WINDOW_DAYS, cart_labels
from cartintel_assets.features.session_features import CutoffPolicy, day_features
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.registry.names import (
    ABANDONMENT_MODEL,
    CERTIFIED_TAG,
    ERASED_SINCE_TAG,
    ERASED_TAG,
)
from cartintel_assets.registry.promotion import (
    PhasePlan,
    judge_pilot,
    pilot_results,
    read_log,
    registry_agrees,
)
from cartintel_assets.registry.tracking import Store
from cartintel_assets.resources.rollout import RolloutResource
from cartintel_assets.simulation.storefront import (
    DriftSpec,
    StorefrontConfig,
    simulate,
    write_storefront,
)
from cartintel_assets.warehouse.tables import replace_partition
from cartintel_tests.conftest import asset_resources, check_results

DRIFT_DAY = 14
CFG = StorefrontConfig(
    days=26,
    sessions_per_day=1500,
    n_customers=6000,
    drift=(DriftSpec(DRIFT_DAY, "shipping_cost", 1.0, "DE"),),
)
FIRST_TRAINING = 10  # landed days 0..10: labels final for days 0..3
FIRST_MONITORED = FIRST_TRAINING - RETURN_WINDOW_DAYS + 1  # day 4: the first after v1's data
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SELECTION = dg.AssetSelection.assets(abandonment_model)


class Shop:
    """The simulated shop landing one day at a time into a warehouse file, as the daily job
    would: raw tables, point-in-time features, and the labels that the new day completes."""

    def __init__(self, root: Path) -> None:
        self.store = simulate(CFG)
        write_storefront(self.store, root / "shop")
        self.landing = root / "shop" / "landing"
        self.db = root / "wh.duckdb"

    def land(self, i: int) -> None:
        con = duckdb.connect(str(self.db))
        day = CFG.day(i)
        for spec in TABLES:
            ingest_partition(con, spec, day, self.landing, "test-key")
        day_features(con, day, CutoffPolicy())
        replace_partition(con, "session_features", "_session_features", day)
        for j in range(max(0, i - RETURN_WINDOW_DAYS), i + 1):
            cart_labels(con, CFG.day(j))
            replace_partition(con, "abandonment_labels", "_cart_labels", CFG.day(j))
        con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> Any:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()


class Ops:
    """The runs an operator (or the daemon) would make, against one instance and stores."""

    def __init__(self, shop: Shop, mlruns: Path, instance: dg.DagsterInstance) -> None:
        self.shop, self.mlruns, self.instance = shop, mlruns, instance
        self.rollout = RolloutResource(pilot_regions=["NL", "ES"])
        self.cursor: str | None = None
        self.automation: Any = None
        self.sensor_says: list[str] = []

    def resources(self, **overrides: Any) -> dict[str, Any]:
        return asset_resources(self.shop.db, self.mlruns, rollout=self.rollout, **overrides)

    def run(self, assets: list[Any], config: dict | None = None, **kw: Any) -> Any:
        return dg.materialize(
            assets,
            instance=self.instance,
            resources=self.resources(),
            raise_on_error=False,
            run_config={**QUIET, **({"ops": config} if config else {})},
            **kw,
        )

    def train(self, **config: Any) -> Any:
        result = self.run([abandonment_model], {"abandonment_model": {"config": config}})
        evaluations = {
            e.event_specific_data.check_name: {
                k: v.value for k, v in e.event_specific_data.metadata.items()
            }
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        assert result.success, f"training failed: {evaluations}"
        return result

    def score_and_monitor(self, i: int) -> dict[str, bool]:
        result = self.run(
            [abandonment_scores, abandonment_drift], partition_key=CFG.day(i).isoformat()
        )
        assert result.success
        return check_results(result)

    def performance(self, i: int) -> dict[str, bool]:
        result = self.run([abandonment_performance], partition_key=CFG.day(i).isoformat())
        assert result.success
        return check_results(result)

    def move(self, action: str, phase: str) -> dict[str, Any]:
        result = self.run(
            [model_promotions],
            {
                "model_promotions": {
                    "config": {"action": action, "phase": phase, "triggered_by": "test"}
                }
            },
        )
        meta = {
            k: v.value
            for k, v in result.asset_materializations_for_node("model_promotions")[
                0
            ].metadata.items()
        }
        assert check_results(result) == {GATE_CHECK: meta["outcome"] == "moved"}
        assert result.success == (meta["outcome"] == "moved")
        return meta

    def agrees(self) -> None:
        con = duckdb.connect(str(self.shop.db), read_only=True)
        try:
            pairs = registry_agrees(
                con, Store(f"sqlite:///{self.mlruns / 'mlflow.db'}"), ABANDONMENT_MODEL
            )
        finally:
            con.close()
        assert pairs and all(log == alias for log, alias in pairs.values()), pairs

    def tick(self, min_new_labels: int) -> int:
        """One sensor tick and one automation evaluation; how many trainings they requested."""
        self.rollout = RolloutResource(
            pilot_regions=["NL", "ES"], retrain_min_new_labels=min_new_labels
        )
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources()
        )
        out = abandonment_retraining_sensor(context)
        if isinstance(out, dg.SensorResult):
            self.cursor = out.cursor
            for event in out.asset_events or []:
                self.instance.report_runless_asset_event(event)
            self.sensor_says.append("requested")
        else:
            self.sensor_says.append(
                str(out.skip_message if isinstance(out, dg.SkipReason) else out)
            )
        self.automation = dg.evaluate_automation_conditions(
            defs=defs,
            instance=self.instance,
            asset_selection=SELECTION,
            cursor=(self.automation.cursor if self.automation else None),
        )
        return self.automation.total_requested


def test_drift_retraining_promotion_and_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shop = Shop(tmp_path)
    with dg.instance_for_test() as instance:
        ops = Ops(shop, tmp_path / "mlruns", instance)
        for i in range(FIRST_TRAINING + 1):
            shop.land(i)
        ops.tick(0)  # the automation's first evaluation only starts its cursor
        v1 = ops.train()
        assert (
            v1.asset_materializations_for_node("abandonment_model")[0]
            .metadata["model_version"]
            .value
            == "1"
        )
        client = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").client

        # nothing holds pilot yet: global is refused; the first rollout needs no global to beat
        refused = ops.move("promote", "global")
        assert refused["outcome"] == "refused" and "holds 'pilot'" in refused["reason"]
        moved = ops.move("promote", "pilot")
        assert (moved["outcome"], moved["to_version"]) == ("moved", "1")
        assert "first rollout" in moved["reason"]
        ops.agrees()

        # v1 has scored no pilot cart whose outcome is final yet
        early = ops.move("promote", "global")
        assert early["outcome"] == "refused" and "only 0 pilot carts" in early["reason"]

        drift_passed: dict[int, bool] = {}
        for i in range(FIRST_MONITORED, FIRST_TRAINING + 1):  # score the days after v1's data
            drift_passed[i] = ops.score_and_monitor(i)[DRIFT_CHECKS[0]]
        # N: more labels than exist when drift first shows, fewer than one day later
        carts = shop.query(
            "SELECT count(*) AS n FROM session_features WHERE partition_date BETWEEN ? AND ?",
            [CFG.day(FIRST_MONITORED), CFG.day(DRIFT_DAY - RETURN_WINDOW_DAYS)],
        )["n"][0]
        n_labels = int(carts) + 1
        requested: dict[int, int] = {}
        says: dict[int, str] = {}
        performance: dict[int, bool] = {}
        for i in range(FIRST_TRAINING + 1, CFG.days):
            shop.land(i)
            drift_passed[i] = ops.score_and_monitor(i)[DRIFT_CHECKS[0]]
            performance[i - RETURN_WINDOW_DAYS] = ops.performance(i - RETURN_WINDOW_DAYS)[
                PERFORMANCE_CHECK
            ]
            if i == FIRST_TRAINING + 3:
                # a no-drift day with every label it could want: no retraining
                assert ops.tick(0) == 0 and "no drift" in ops.sensor_says[-1], (
                    ops.sensor_says,
                    drift_passed,
                    performance,
                    shop.query("SELECT * FROM monitoring_results WHERE NOT passed").to_dict(
                        "records"
                    ),
                )
                moved = ops.move("promote", "global")
                assert (moved["outcome"], moved["to_version"]) == ("moved", "1"), moved["reason"]
                ops.agrees()
            requested[i] = ops.tick(n_labels)
            says[i] = ops.sensor_says[-1]
            if requested[i]:
                v2 = ops.train()
                meta = v2.asset_materializations_for_node("abandonment_model")[0].metadata
                assert meta["model_version"].value == "2" and meta["gate"].value == "passed"
                to_pilot = ops.move("promote", "pilot")
                assert (to_pilot["outcome"], to_pilot["to_version"]) == ("moved", "2"), to_pilot[
                    "reason"
                ]
                ev = to_pilot["evidence"]
                assert (
                    ev["candidate_roc_auc"] >= ev["global_roc_auc"] and ev["global_version"] == "1"
                )
                ops.agrees()

        # the drift check failed on the drifted days only
        assert drift_passed == {i: i < DRIFT_DAY for i in drift_passed}
        # ... naming the planted drift: shipping cost, in DE
        failed = shop.query(
            "SELECT detail FROM monitoring_results WHERE check_name = ? AND NOT passed",
            [DRIFT_CHECKS[0]],
        )
        assert len(failed) >= sum(not ok for ok in drift_passed.values()) > 0
        for detail in failed["detail"]:
            slices = json.loads(detail)["slices_over"]
            regions = {s["value"]: s["drifted"] for s in slices if s["by"] == "region"}
            assert "shipping_cost" in regions.get("DE", {}), regions
            assert [r for r, cols in regions.items() if "shipping_cost" in cols] == ["DE"]
        # exactly one retraining, on the first tick with drift and enough labels (the day after
        # drift showed, when one more day's labels were final)
        assert [i for i, n in requested.items() if n] == [DRIFT_DAY + 1]
        assert "waiting for labels" in says[DRIFT_DAY] and says[DRIFT_DAY + 1] == "requested"
        assert all("no drift" in says[i] for i in range(FIRST_TRAINING + 1, DRIFT_DAY))
        # realised performance was measured for every day whose outcomes became final
        assert set(performance) == set(range(FIRST_MONITORED, CFG.days - RETURN_WINDOW_DAYS))

        # scoring follows the phases: v2 in the pilot regions, v1 elsewhere
        served = shop.query(
            "SELECT f.region, s.model_alias, s.model_version, count(*) AS n FROM abandonment_scores s"
            " JOIN session_features f USING (session_id) WHERE s.partition_date = ?"
            " GROUP BY ALL",
            [CFG.day(CFG.days - 1)],
        )
        for row in served.itertuples():
            pilot = row.region in ("NL", "ES")
            assert (row.model_alias, row.model_version) == (
                ("pilot", "2") if pilot else ("global", "1")
            )

        # a model worse than global passes its own (loosened) training checks but not the pilot
        ops.train(
            max_depth=1,
            n_estimators=3,
            min_roc_auc=0.5,
            min_pr_auc=0.0,
            max_calibration_error=1.0,
            global_tolerance=1.0,
        )
        assert client.get_model_version_by_alias(ABANDONMENT_MODEL, "challenger").version in (
            3,
            "3",
        )
        worse = ops.move("promote", "pilot")
        assert worse["outcome"] == "refused" and "does not beat global" in worse["reason"]
        assert worse["evidence"]["candidate_roc_auc"] < worse["evidence"]["global_roc_auc"]
        assert str(client.get_model_version_by_alias(ABANDONMENT_MODEL, "pilot").version) == "2"

        # v2's pilot results, final 7 days after it began scoring the pilot regions
        to_global = ops.move("promote", "global")
        assert (to_global["outcome"], to_global["to_version"]) == ("moved", "2"), to_global
        assert to_global["evidence"]["labelled_carts"] >= PhasePlan().global_min_labelled
        ops.agrees()
        # and a pilot whose scores carry no information is refused at the global gate
        con = duckdb.connect(str(shop.db), read_only=True)
        results = pilot_results(con, ABANDONMENT_MODEL, "2")
        con.close()
        results["risk"] = np.random.default_rng(0).permutation(results["risk"].to_numpy())
        blind = judge_pilot(results, PhasePlan(pilot_regions=("NL", "ES")))
        assert not blind.passed and "pilot ROC-AUC" in blind.reason

        # a rollback to a version trained on rows erased long ago waits for its certification
        client.set_model_version_tag(ABANDONMENT_MODEL, "1", ERASED_SINCE_TAG, "2026-01-02T00:00")
        client.set_model_version_tag(ABANDONMENT_MODEL, "1", ERASED_TAG, "1")
        erased = ops.move("rollback", "global")
        assert erased["outcome"] == "refused" and "rows erased since" in erased["reason"]
        client.set_model_version_tag(ABANDONMENT_MODEL, "1", CERTIFIED_TAG, "dpo@shop")
        back = ops.move("rollback", "global")
        assert (back["outcome"], back["from_version"], back["to_version"]) == ("moved", "2", "1")
        assert str(client.get_model_version_by_alias(ABANDONMENT_MODEL, "global").version) == "1"
        ops.agrees()
        again = ops.move("rollback", "global")  # v1 was the first global: nothing before it
        assert again["outcome"] == "refused"

        con = duckdb.connect(str(shop.db), read_only=True)
        log = read_log(con, ABANDONMENT_MODEL)
        con.close()
        assert list(zip(log["phase"], log["action"], log["outcome"], strict=True)) == [
            ("global", "promote", "refused"),
            ("pilot", "promote", "moved"),
            ("global", "promote", "refused"),
            ("global", "promote", "moved"),
            ("pilot", "promote", "moved"),
            ("pilot", "promote", "refused"),
            ("global", "promote", "moved"),
            ("global", "rollback", "refused"),
            ("global", "rollback", "moved"),
            ("global", "rollback", "refused"),
        ]
        assert set(log["triggered_by"]) == {"test"} and log["dagster_run_id"].str.len().min() > 0
        assert all(json.loads(e) is not None for e in log["evidence"])
        tags = client.get_model_version(ABANDONMENT_MODEL, "1").tags
        assert tags["global.rollback_at"] and tags["global.from_version"] == "2"
        # the same moves from the command line, on the default resources pointed at these stores
        monkeypatch.setenv("CARTINTEL_WAREHOUSE", str(shop.db))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        capsys.readouterr()
        assert main(["rollback", "--model", "abandonment", "--phase", "global"]) == 1
        refused = capsys.readouterr()
        # the reason, not Dagster's stack trace of the failed gate check
        assert "refused" in refused.out and "reason:" in refused.out
        assert "Stack Trace" not in refused.out + refused.err
        assert main(["promote", "--model", "abandonment", "--to", "global"]) == 0
        printed = capsys.readouterr().out
        assert "moved (version 1 -> 2)" in printed and "'global': '2'" in printed
        con = duckdb.connect(str(shop.db), read_only=True)
        cli = read_log(con, ABANDONMENT_MODEL).tail(2)
        con.close()
        assert list(cli["outcome"]) == ["refused", "moved"]
        assert cli["triggered_by"].str.startswith("cli:").all()
        ops.agrees()

        # the drift reports are in the Dagster metadata's folder and in v1's MLflow run
        run_id = client.get_model_version(ABANDONMENT_MODEL, "1").run_id
        day = CFG.day(DRIFT_DAY).isoformat()
        reports = {a.path for a in client.list_artifacts(run_id, f"monitoring/{day}")}
        assert reports == {
            f"monitoring/{day}/{day}_features.html",
            f"monitoring/{day}/{day}_score.html",
        }


@pytest.mark.parametrize("gate_failed", [False, True])
def test_retraining_request_waits_for_upstream_quality_gates(gate_failed: bool) -> None:
    """A request retrains once; never while the latest blocking data-quality check of any day
    upstream failed, even though that check ran in another run."""
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=SELECTION
        )
        if gate_failed:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey("raw_events"),
                    check_name="raw_events_passes_quality_gate",
                    passed=False,
                    partition="2026-10-05",
                    blocking=True,
                )
            )
        instance.report_runless_asset_event(dg.AssetMaterialization("retraining_request"))
        counts = []
        cursor = first.cursor
        for _ in range(3):
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=SELECTION, cursor=cursor
            )
            counts.append(result.total_requested)
            cursor = result.cursor
        assert counts == ([0, 0, 0] if gate_failed else [1, 0, 0])
