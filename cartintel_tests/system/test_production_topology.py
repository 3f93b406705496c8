"""The production topology of infra/, run natively: PostgreSQL from Debian's packages on
127.0.0.1 (infra/scripts/postgres.sh), Dagster's instance on it (infra/dagster/dagster.yaml) with
its webserver, daemon and a code-location server (infra/dagster/workspace.yaml), and an MLflow
tracking server whose backend store is PostgreSQL. A small storefront's earlier days are in the
warehouse already (ingested, labelled, featurised as the daily assets write them: a daily run
through the daemon costs ~40 s here); its last day's daily job, segmentation and training are
runs launched through Dagster's GraphQL API (queued, dequeued by the daemon, started by the code
server). Runs, asset checks and registry aliases are read back through GraphQL, MLflow's REST
client and PostgreSQL. Artifacts go to a local directory here (S3/MinIO in infra/compose.yaml)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from cartintel_assets.features.labels import RETURN_WINDOW_DAYS
from cartintel_assets.registry.names import ABANDONMENT_MODEL as RISK_MODEL
from cartintel_assets.registry.names import SEGMENTATION_MODEL
from cartintel_assets.simulation.storefront import StorefrontConfig, simulate
from cartintel_tests.conftest import labelled_warehouse
from cartintel_tests.processes import free_port, graphql, wait_until_answers

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# enough labelled days for the risk model's gates: labels need the 7 days after a cart
CFG = StorefrontConfig(days=RETURN_WINDOW_DAYS + 4, sessions_per_day=1200, n_customers=3000)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RUN_TIMEOUT_S = 600


@dataclass
class Topology:
    base: Path
    env: dict[str, str]
    graphql_url: str
    mlflow_url: str
    pg_dsn: dict[str, Any]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: dict[str, tuple[subprocess.Popen[bytes], tuple[str, ...]]] = field(
        default_factory=dict
    )

    def start(self, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        log = self.base / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.started[name] = (proc, cmd)
        return proc

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.graphql_url, query, **variables)


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
RUN = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"""
CHECKS = """
{ assetNodes { assetKey { path }
    assetChecksOrError { __typename ... on AssetChecks { checks {
      name executionForLatestMaterialization { status runId } } } } } }"""
LOCATION = """
{ workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on RepositoryLocation { name } } } } } }"""


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    # the postgres account must reach the data directory: a world-traversable base in /tmp
    base = Path(tempfile.mkdtemp(prefix="cartintel-topology-"))
    base.chmod(0o711)
    password = secrets.token_urlsafe(18)
    pg_port, mlflow_port, code_port, web_port = (free_port() for _ in range(4))
    home = base / "dagster_home"
    home.mkdir()
    for f in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(ROOT / "infra" / "dagster" / f, home / f)
    store_dir = base / "storefront"
    # MLflow's authentication app with the deployment's config, its user store moved to base
    auth = (ROOT / "infra" / "mlflow" / "basic_auth.ini").read_text()
    users = f"sqlite:///{base / 'mlflow-auth.db'}"
    (base / "basic_auth.ini").write_text(
        re.sub(r"(?m)^database_uri = .*$", f"database_uri = {users}", auth)
    )
    mlflow_password = secrets.token_urlsafe(18)
    # conftest ingests with the pseudonym key "test-key": the runs below use the same
    labelled_warehouse(simulate(CFG), store_dir, str(base / "warehouse.duckdb"), True).close()
    env = {
        **os.environ,
        "CARTINTEL_PG_USER": "cartintel",
        "CARTINTEL_PG_PASSWORD": password,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_port),
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_USERNAME": "cartintel",
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_CODE_HOST": "127.0.0.1",
        "DAGSTER_CODE_PORT": str(code_port),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "MLFLOW_BACKEND_STORE_URI": (
            f"postgresql+psycopg2://cartintel:{password}@127.0.0.1:{pg_port}/mlflow"
        ),
        "MLFLOW_ARTIFACTS_DESTINATION": str(base / "artifacts"),
        "MLFLOW_AUTH_CONFIG_PATH": str(base / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "cartintel",
        "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(18),
        "MLFLOW_TRACKING_USERNAME": "cartintel",  # every cartintel process signs in
        "MLFLOW_TRACKING_PASSWORD": mlflow_password,
        "CARTINTEL_LANDING": str(store_dir / "landing"),
        "CARTINTEL_WAREHOUSE": str(base / "warehouse.duckdb"),
        "CARTINTEL_REPORTS": str(base / "reports"),
        "CARTINTEL_PSEUDONYM_KEY": "test-key",
        "DO_NOT_TRACK": "true",
        "OMP_NUM_THREADS": "1",
    }
    top = Topology(
        base,
        env,
        f"http://127.0.0.1:{web_port}/graphql",
        env["MLFLOW_TRACKING_URI"],
        {
            "host": "127.0.0.1",
            "port": pg_port,
            "user": "cartintel",
            "password": password,
        },
    )
    script = str(ROOT / "infra" / "scripts" / "postgres.sh")
    subprocess.run(["bash", script, "start", str(base / "pg"), str(pg_port)], env=env, check=True)
    try:
        mlflow = top.start("mlflow", str(BIN / "mlflow"), "server", "--host", "127.0.0.1",
                           "--port", str(mlflow_port), "--workers", "1",
                           "--app-name", "basic-auth")  # fmt: skip
        code = top.start("code-server", str(BIN / "dagster"), "code-server", "start",
                         "-h", "127.0.0.1", "-p", str(code_port),
                         "-m", "cartintel_assets.definitions")  # fmt: skip
        web = top.start("webserver", str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                        "-p", str(web_port), "-w", str(home / "workspace.yaml"))  # fmt: skip
        top.start("daemon", str(BIN / "dagster-daemon"), "run",
                  "-w", str(home / "workspace.yaml"))  # fmt: skip
        wait_until_answers(f"{top.mlflow_url}/health", mlflow, base / "logs" / "mlflow.log", 180)
        wait_until_answers(
            f"http://127.0.0.1:{web_port}/server_info", web, base / "logs" / "webserver.log", 180
        )
        deadline = time.monotonic() + 240  # the code server imports the whole stack
        while True:
            entries = top.graphql(LOCATION)["workspaceOrError"]["locationEntries"]
            state = entries[0]["locationOrLoadError"] if entries else None
            if state and state["__typename"] == "RepositoryLocation":
                break
            if code.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"code location not loaded ({state}):\n"
                    + (base / "logs" / "code-server.log").read_text()[-3000:]
                )
            time.sleep(2)
        with pytest.MonkeyPatch.context() as mp:  # this test's own MLflow client signs in too
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                mp.setenv(name, env[name])
            yield top
    finally:
        for proc in reversed(top.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in top.procs:  # the test's own servers: a short grace, then killed
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        subprocess.run(["bash", script, "stop", str(base / "pg")], env=env, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _launch(top: Topology, job: str, partition: str | None = None) -> str:
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {
        "selector": {
            "repositoryLocationName": "cartintel",
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": QUIET,
        "executionMetadata": {"tags": tags},
    }
    out = top.graphql(LAUNCH, params=params)["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    return str(out["run"]["runId"])


def _wait_runs(top: Topology, run_ids: list[str]) -> dict[str, str]:
    """Poll until every run has ended (the queue admits one at a time); their final status."""
    deadline = time.monotonic() + RUN_TIMEOUT_S * len(run_ids)
    status: dict[str, str] = {}
    while len(status) < len(run_ids):
        for rid in run_ids:
            if rid not in status:
                s = top.graphql(RUN, id=rid)["runOrError"]["status"]
                if s in ("SUCCESS", "FAILURE", "CANCELED"):
                    status[rid] = s
                    print(f"  topology: run {rid[:8]} {s}", flush=True)
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still going after {RUN_TIMEOUT_S} s each: {status}")
        time.sleep(2)
    return status


def test_the_graph_runs_on_postgres_backed_dagster_and_mlflow(topology: Topology) -> None:
    top = topology
    last_day = CFG.day(CFG.days - 1).isoformat()
    # through the queue: the daemon dequeues one at a time, the code server starts each run
    launched = [
        _launch(top, "storefront_daily_job", last_day),
        _launch(top, "segmentation_job"),
        _launch(top, "abandonment_training_job"),
    ]
    status = _wait_runs(top, launched)
    assert all(s == "SUCCESS" for s in status.values()), status

    # runs as Dagster's GraphQL API reports them, from PostgreSQL
    runs = top.graphql(RUNS)["runsOrError"]["results"]
    by_job: dict[str, int] = {}
    for r in runs:
        assert r["status"] == "SUCCESS", r
        by_job[r["jobName"]] = by_job.get(r["jobName"], 0) + 1
    assert by_job == {
        "storefront_daily_job": 1,
        "segmentation_job": 1,
        "abandonment_training_job": 1,
    }
    partitions = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"}
    assert partitions == {last_day}

    # the data-quality gates ran as asset checks in those runs
    executed = {}
    for node in top.graphql(CHECKS)["assetNodes"]:
        checks = node["assetChecksOrError"]
        if checks["__typename"] != "AssetChecks":
            continue
        for c in checks["checks"]:
            run = c["executionForLatestMaterialization"]
            if run is not None:
                executed[("/".join(node["assetKey"]["path"]), c["name"])] = run
    assert {e["runId"] for e in executed.values()} <= set(launched)
    daily_checks = [k for k, e in executed.items() if e["runId"] == launched[0]]
    assert len(daily_checks) >= 10, executed  # the day's data-quality gates
    assert all(e["status"] in ("SUCCEEDED", "FAILED") for e in executed.values())
    # the training gates, as checks of the model asset
    assert any(e["runId"] == launched[2] for e in executed.values()), executed

    # MLflow asks for credentials (its auth app) on everything but /health
    search = f"{top.mlflow_url}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(f"{top.mlflow_url}/health", timeout=10).status_code == 200
    assert httpx.get(search, timeout=10).status_code == 401
    assert httpx.get(search, timeout=10, auth=("cartintel", "wrong")).status_code == 401
    # the registry, through the MLflow tracking server's REST API (signed in)
    client = MlflowClient(tracking_uri=top.mlflow_url, registry_uri=top.mlflow_url)
    seg = client.get_registered_model(SEGMENTATION_MODEL)
    assert seg.aliases.get("challenger") == "1"
    risk = client.search_model_versions(f"name='{RISK_MODEL}'")
    assert len(risk) == 1
    (version,) = risk
    assert version.tags["gate"] == "passed"  # the small storefront still clears the gates
    assert client.get_registered_model(RISK_MODEL).aliases == {"challenger": version.version}
    run_id = version.run_id
    assert client.get_run(run_id).data.tags["dagster.run_id"] in {r["runId"] for r in runs}
    # its artifacts went through the server's proxy to the artifact store
    assert any(a.path == "plots" for a in client.list_artifacts(run_id))

    # and all of it lives in PostgreSQL
    with psycopg2.connect(dbname="dagster", **top.pg_dsn) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] == len(runs)
    with psycopg2.connect(dbname="mlflow", **top.pg_dsn) as con, con.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                    (RISK_MODEL,))  # fmt: skip
        assert cur.fetchall() == [("challenger", int(version.version))]


# run monitoring polls every 10 s (infra/dagster/dagster.yaml); a run killed with its code server
# is failed once the restarted server serves the location again (defs/launcher.py)
KILLED_RUN_FAILS_WITHIN_S = 180


def test_a_killed_run_is_marked_failed_and_the_queue_moves_on(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code-location server and the daily run it started are killed (kill -9 of the process
    group, as an OOM kill or an eviction of their container does) in the middle of the run's
    ingestion, and the server restarts: nobody is left to report the run, yet run monitoring
    (the launcher's health check) marks it failed within a bound, the run queued behind it
    starts and succeeds, the daemon retries the killed run once, and the warehouse opens
    cleanly with the partition whole (DuckDB's transactions: no partial day)."""
    import dagster as dg
    import duckdb
    from dagster import DagsterEventType

    top = topology
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME",
                 "DAGSTER_PG_PASSWORD"):  # fmt: skip
        monkeypatch.setenv(name, top.env[name])
    day = CFG.day(1).isoformat()
    db = top.env["CARTINTEL_WAREHOUSE"]

    def events_of_day() -> int:
        with duckdb.connect(db, read_only=True) as con:
            sql = "SELECT count(*) FROM raw_events WHERE partition_date = ?"
            return int(con.execute(sql, [day]).fetchall()[0][0])

    before = events_of_day()
    assert before > 1000
    killed = _launch(top, "storefront_daily_job", day)
    queued = _launch(top, "segmentation_job")
    with dg.DagsterInstance.from_config(str(top.base / "dagster_home")) as instance:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not instance.all_logs(killed, of_type=DagsterEventType.STEP_START):
            assert time.monotonic() < deadline, "the daily run did not start"
            time.sleep(0.2)
    server, cmd = top.started["code-server"]
    os.killpg(server.pid, signal.SIGKILL)  # the server and the run's process with it
    server.wait()
    killed_at = time.monotonic()
    top.start("code-server", *cmd)
    while (s := top.graphql(RUN, id=killed)["runOrError"]["status"]) != "FAILURE":
        assert s in ("STARTED", "STARTING"), s
        assert time.monotonic() - killed_at < KILLED_RUN_FAILS_WITHIN_S, "still " + s
        time.sleep(1)
    print(f"  topology: killed run failed {time.monotonic() - killed_at:.0f} s after kill -9")
    if _wait_runs(top, [queued]) != {queued: "SUCCESS"}:
        with dg.DagsterInstance.from_config(str(top.base / "dagster_home")) as instance:
            said = [e.message for e in instance.all_logs(queued) if e.is_dagster_event]
        raise AssertionError(f"the queued run failed: {said[-5:]}")
    assert events_of_day() == before
    # the daemon starts the killed run again (run_retries: its process died, no asset failed),
    # from where it died; the day it ingests again comes out the same
    deadline, retried = time.monotonic() + 60, []
    while not retried and time.monotonic() < deadline:
        retried = [
            r["runId"]
            for r in top.graphql(RUNS)["runsOrError"]["results"]
            if {"key": "dagster/parent_run_id", "value": killed} in r["tags"]
        ]
        time.sleep(1)
    assert len(retried) == 1, "the killed run was not retried within 60 s"
    assert _wait_runs(top, retried) == {retried[0]: "SUCCESS"}
    assert events_of_day() == before
