"""Training through Dagster: an MLflow run, a registered version with the challenger alias, gates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest

from cartintel_assets.defs.abandonment.assets import (
    GATES,
    abandonment_model,
    abandonment_scores,
)
from cartintel_assets.models.abandonment import BoostedModel
from cartintel_assets.registry.names import ABANDONMENT_MODEL
from cartintel_assets.registry.tracking import Store
from cartintel_assets.simulation.storefront import StorefrontConfig, simulate
from cartintel_tests.conftest import asset_resources, check_results, labelled_warehouse

CFG = StorefrontConfig(days=16, sessions_per_day=1000, n_customers=4000)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    db = out / "wh.duckdb"
    con = labelled_warehouse(simulate(CFG), out, str(db), features=True)
    con.close()
    return db


def _train(db: Path, mlruns: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [abandonment_model],
        instance=instance,
        resources=asset_resources(db, mlruns),
        raise_on_error=False,
        run_config=QUIET,
    )


def _score(
    db: Path, mlruns: Path, instance: dg.DagsterInstance, day: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [abandonment_scores],
        instance=instance,
        resources=asset_resources(db, mlruns),
        partition_key=day,
        raise_on_error=False,
        run_config=QUIET,
    )


def test_training_logs_registers_and_gates(warehouse: Path, tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    with dg.instance_for_test() as instance:
        first = _train(warehouse, mlruns, instance)
        assert first.success
        assert check_results(first) == dict.fromkeys(GATES, True)
        meta = first.asset_materializations_for_node("abandonment_model")[0].metadata
        assert meta["model_version"].value == "1" and meta["gate"].value == "passed"
        store = Store(f"sqlite:///{mlruns / 'mlflow.db'}")
        client = store.client
        run = client.get_run(meta["mlflow_run_id"].value)
        assert run.data.tags["dagster.run_id"] == first.run_id
        assert run.data.metrics["test_roc_auc"] > run.data.metrics["baseline_test_roc_auc"] - 0.02
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert artifacts == {
            f"plots/{n}" for n in ("roc.png", "pr.png", "calibration.png", "shap_summary.png")
        }
        assert (
            str(client.get_model_version_by_alias(ABANDONMENT_MODEL, "challenger").version) == "1"
        )
        assert run.data.metrics["abandoned_test_roc_auc"] > 0.8  # the secondary label, reported
        assert meta["plots"].value.count("data:image/png;base64,") == 4
        # loads back by alias and scores like the model it logged
        loaded = store.load_pyfunc(f"models:/{ABANDONMENT_MODEL}@challenger")
        con = duckdb.connect(str(warehouse), read_only=True)
        rows = con.execute("SELECT * FROM session_features LIMIT 500").df()
        con.close()
        local = store.download(f"models:/{ABANDONMENT_MODEL}@challenger", tmp_path / "dl")
        direct = BoostedModel.load(Path(local) / "artifacts" / "risk_model")
        assert "n_views" in str(loaded.metadata.signature)  # a real column signature
        assert np.array_equal(
            np.asarray(loaded.predict(direct.typed(rows))), direct.predict_proba(rows)
        )

        # batch scores of the latest day: every open cart, by alias, version on every row
        last = CFG.day(CFG.days - 1).isoformat()
        scored = _score(warehouse, mlruns, instance, last)
        assert scored.success
        con = duckdb.connect(str(warehouse), read_only=True)
        features = con.execute(
            "SELECT * FROM session_features WHERE partition_date = ? ORDER BY session_id", [last]
        ).df()
        scores = con.execute(
            "SELECT * FROM abandonment_scores WHERE partition_date = ? ORDER BY session_id", [last]
        ).df()
        con.close()
        assert len(scores) == len(features) > 500
        assert scores["session_id"].tolist() == features["session_id"].tolist()
        assert set(scores["model_version"]) == {"1"} and set(scores["model_alias"]) == {
            "challenger"
        }
        assert set(scores["model_run_id"]) == {run.info.run_id}
        assert np.allclose(scores["risk"], loaded.predict(direct.typed(features)), atol=1e-12)
        assert set(scores["risk_decile"]) == set(range(1, 11))
        named = {c for codes in scores["reason_codes"] for c in codes}
        assert named and named <= set(direct.features)
        assert all(len(c) <= 3 for c in scores["reason_codes"])

        # a second run is a new version; with a global version in place the gate compares against it
        client.set_registered_model_alias(ABANDONMENT_MODEL, "global", "1")
        second = _train(warehouse, mlruns, instance)
        assert second.success and check_results(second)["abandonment_model_no_worse_than_global"]
        second_meta = second.asset_materializations_for_node("abandonment_model")[0].metadata
        assert str(second_meta["global"].value).startswith("version 1, test ROC-AUC")
        assert str(meta["global"].value).startswith("none")
        assert (
            str(client.get_model_version_by_alias(ABANDONMENT_MODEL, "challenger").version) == "2"
        )
        second_run = client.get_run(
            second.asset_materializations_for_node("abandonment_model")[0]
            .metadata["mlflow_run_id"]
            .value
        )
        assert second_run.data.metrics["global_test_roc_auc"] == pytest.approx(
            run.data.metrics["test_roc_auc"], abs=1e-9
        )


def test_gate_blocks_a_model_trained_on_shuffled_labels(warehouse: Path, tmp_path: Path) -> None:
    db = tmp_path / "shuffled.duckdb"
    db.write_bytes(warehouse.read_bytes())
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE abandonment_labels SET harmful = s.h FROM (SELECT session_id, lead(harmful, 37, FALSE) OVER"
        " (ORDER BY hash(session_id)) AS h FROM abandonment_labels) s WHERE s.session_id = abandonment_labels.session_id"
    )
    con.close()
    with dg.instance_for_test() as instance:
        result = _train(db, tmp_path / "mlruns", instance)
        checks = check_results(result)
        assert not result.success  # a failed blocking check fails the step
        assert not checks["abandonment_model_roc_auc_above_floor"]
        # registered for the audit trail, but not the challenger: nothing can score with it
        client = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").client
        version = client.get_model_version(ABANDONMENT_MODEL, "1")
        assert version.tags["gate"] == "failed" and not version.aliases
        scored = _score(db, tmp_path / "mlruns", instance, CFG.day(CFG.days - 1).isoformat())
        assert not scored.success
        failure = scored.get_step_failure_events()[0].event_specific_data
        assert "has the alias 'challenger'" in str(failure.error)  # type: ignore[union-attr]


def test_training_and_promotion_killed_between_their_two_stores(
    warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 (`settings.crash_point`) of a real `dagster asset materialize` of the model right
    after its version is registered, and of a real `cartintel promote` right after the move's
    log row: no version without its run and gate tags, no alias ahead of the promotion log,
    and the next promotion brings the registry to what the log records."""
    import shutil
    import subprocess
    import sys

    from cartintel_assets.cli import LOCAL_INSTANCE, main
    from cartintel_assets.registry.promotion import read_log
    from cartintel_assets.registry.registration import version_by_alias

    db, mlruns, home = tmp_path / "wh.duckdb", tmp_path / "mlruns", tmp_path / "home"
    shutil.copy(warehouse, db)
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE)
    env = {
        **os.environ,
        "CARTINTEL_WAREHOUSE": str(db),
        "CARTINTEL_MLRUNS": str(mlruns),
        "DAGSTER_HOME": str(home),
        "DO_NOT_TRACK": "true",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    bin_ = Path(sys.executable).parent
    train = [str(bin_ / "dagster"), "asset", "materialize", "-m", "cartintel_assets.definitions"]
    train += ["--select", "abandonment_model"]
    promote = [str(bin_ / "cartintel"), "promote", "--model", "abandonment", "--to", "pilot"]

    def run(cmd: list[str], crash_at: str | None = None) -> int:
        """The exit code; -9 when the process (or the run's step process) was killed."""
        extra = {"CARTINTEL_CRASH_AT": crash_at} if crash_at else {}
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
        out = done.stdout + done.stderr
        assert done.returncode in (0, 1, -9), out[-3000:]
        return -9 if "terminated by signal 9" in out else done.returncode

    store = Store(f"sqlite:///{mlruns / 'mlflow.db'}")

    def versions() -> dict[str, dict[str, str]]:
        found = store.client.search_model_versions(f"name = '{ABANDONMENT_MODEL}'")
        return {str(v.version): dict(v.tags) for v in found}

    def log() -> Any:
        with duckdb.connect(str(db), read_only=True) as con:  # opens cleanly after each kill
            return read_log(con, ABANDONMENT_MODEL)

    assert run(train, crash_at="registry.version_registered") == -9
    killed = versions()
    assert list(killed) == ["1"]  # registered, with every tag it is judged by
    assert {"gate", "dagster.run_id", "data_to", "test_from"} <= set(killed["1"])
    assert (
        store.client.get_run(
            store.client.get_model_version(ABANDONMENT_MODEL, "1").run_id
        ).data.tags["gate"]
        == killed["1"]["gate"]
    )
    assert version_by_alias(store, ABANDONMENT_MODEL, "challenger") is None  # nothing serves it

    # after each kill, the next run (in this process, on the same stores) finds them sound
    for name in ("CARTINTEL_WAREHOUSE", "CARTINTEL_MLRUNS", "DAGSTER_HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with dg.instance_for_test() as instance:
        assert _train(db, mlruns, instance).success
    assert version_by_alias(store, ABANDONMENT_MODEL, "challenger") == "2"
    assert run(promote, crash_at="promotion.logged") == -9
    rows = log()
    assert rows[["phase", "outcome", "to_version"]].values.tolist() == [["pilot", "moved", "2"]]
    assert version_by_alias(store, ABANDONMENT_MODEL, "pilot") is None  # behind, never ahead
    assert main(promote[1:]) == 1  # the logged move finished first; then pilot holds it
    assert version_by_alias(store, ABANDONMENT_MODEL, "pilot") == "2"
    assert versions()["2"]["pilot.dagster_run_id"] == rows.iloc[0]["dagster_run_id"]
    assert log()["outcome"].tolist() == ["moved", "refused"]
