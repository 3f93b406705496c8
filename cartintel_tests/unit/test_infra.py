"""infra/ validated offline with the tools its formats come with: the Compose spec (vendored by
check-jsonschema), Kubernetes' own schemas (bundled by kubernetes-validate), Dagster's instance
and workspace schemas, yamllint; and no secret written into any file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import process_workspace_config
from dagster_postgres.utils import pg_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent
PG_ENV = {
    "DAGSTER_PG_HOST": "postgres",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "cartintel",
    "DAGSTER_PG_PASSWORD": "from-the-environment",
    "DAGSTER_CODE_HOST": "user-code",
    "DAGSTER_CODE_PORT": "4000",
}


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_follows_the_compose_spec_and_binds_to_localhost(tmp_path: Path) -> None:
    compose = INFRA / "compose.yaml"
    ok = _tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    spec = _load(compose)
    services = spec["services"]
    assert set(services) == {
        "postgres",
        "minio",
        "minio-setup",
        "mlflow",
        "user-code",
        "webserver",
        "daemon",
        "scoring",
    }
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # MLflow with its authentication app, its config the file in infra/mlflow
    assert services["mlflow"]["command"][-2:] == ["--app-name", "basic-auth"]
    assert mlflow["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert services["mlflow"]["configs"] == [
        {"source": "mlflow-auth", "target": "/etc/mlflow/basic_auth.ini"}
    ]
    assert spec["configs"]["mlflow-auth"]["file"] == "./mlflow/basic_auth.ini"
    for name in ("user-code", "webserver", "daemon"):  # one instance: Dagster's PostgreSQL
        env = services[name]["environment"]
        assert env["DAGSTER_PG_HOST"] == "postgres" and env["DAGSTER_CODE_HOST"] == "user-code"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("user-code", "daemon", "scoring"):  # they sign in to MLflow
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${CARTINTEL_MLFLOW_PASSWORD:?")
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)

    # the validator does reject a broken file
    services["webserver"]["ports"] = "3000:3000"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(spec))
    bad = _tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken))
    assert bad.returncode != 0


def test_kubernetes_manifests_pass_strict_schema_validation(tmp_path: Path) -> None:
    manifests = INFRA / "k8s" / "cartintel.yaml"
    ok = _tool("kubernetes-validate", "-k", "1.34.0", "--strict", str(manifests))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifests.read_text())}
    assert {("Deployment", "mlflow"), ("Deployment", "scoring"), ("Service", "scoring")} <= kinds
    docs = {
        (d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(manifests.read_text())
    }
    server = docs["Deployment", "mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert server["command"][-2:] == ["--app-name", "basic-auth"]
    # the auth app's config is infra/mlflow/basic_auth.ini as it is
    ini = docs["ConfigMap", "mlflow-auth"]["data"]["basic_auth.ini"]
    assert ini == (INFRA / "mlflow" / "basic_auth.ini").read_text()
    typo = manifests.read_text().replace("containerPort: 8000", "containerPrt: 8000")
    (tmp_path / "bad.yaml").write_text(typo)
    bad = _tool("kubernetes-validate", "-k", "1.34.0", "--strict", str(tmp_path / "bad.yaml"))
    assert bad.returncode != 0


def test_dagster_instance_and_workspace_validate_against_dagsters_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((INFRA / "dagster" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(home))
    storage = process_config(pg_config(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["password"] == "from-the-environment"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 1

    workspace = _load(INFRA / "dagster" / "workspace.yaml")
    checked = process_workspace_config(workspace)
    assert checked.success, checked.errors
    server = checked.value["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"], server["location_name"]) == (
        "user-code",
        4000,
        "cartintel",
    )
    assert _load(ROOT / "workspace.yaml")["load_from"][0]["python_module"]["location_name"] == (
        "cartintel"
    )

    (home / "dagster.yaml").write_text(
        (INFRA / "dagster" / "dagster.yaml").read_text() + "\nrun_coordinatr: {}\n"
    )
    with pytest.raises(Exception, match="run_coordinatr"):
        dagster_instance_config(str(home))


def test_helm_values_use_the_official_charts_external_postgres_and_k8s_run_launcher() -> None:
    values = _load(INFRA / "k8s" / "values-dagster.yaml")
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (code,) = values["dagster-user-deployments"]["deployments"]
    # the same module the workspaces load
    assert code["dagsterApiGrpcArgs"] == ["-m", "cartintel_assets.definitions"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'code_location_target_module = "cartintel_assets.definitions"' in pyproject
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == [{"name": "cartintel-secrets"}]
    # the warehouse, and the settings file (test_every_deployment_reads_the_one_settings_file)
    assert {m["mountPath"] for m in launcher["volumeMounts"]} == {"/data", "/etc/cartintel"}


def test_infra_passes_yamllint_and_holds_no_secret() -> None:
    lint = _tool("yamllint", "-c", str(INFRA / ".yamllint.yaml"), str(INFRA))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # keys that hold a secret's value (not the name of a Secret that holds it)
    secretish = re.compile(r"(password|secret_access_key|pseudonym_key|token)$", re.IGNORECASE)
    files = [
        p for p in INFRA.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".ini", ""}
    ]
    assert len(files) >= 5
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            key, sep, value = line.partition("=" if path.suffix == ".ini" else ":")
            value = value.strip().strip("\"'")
            if not sep or not secretish.search(key.strip()) or line.lstrip().startswith("#"):
                continue
            if not value:  # a mapping follows: Dagster's {env: ...} (checked above)
                continue
            # a secret's value always comes from the environment
            assert value.startswith(("${", "$$")), (
                f"{path.relative_to(ROOT)}:{n} writes a secret: {line.strip()}"
            )


def test_every_deployment_reads_the_one_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap carries infra/settings.yaml as it is, every process that plans, gates or
    scores mounts it under $CARTINTEL_SETTINGS, and its values parse."""
    from cartintel_assets.decisions.settings import PlanSettings
    from cartintel_assets.registry.rollout import RolloutSettings

    source = yaml.safe_load((ROOT / "infra" / "settings.yaml").read_text())
    docs = list(yaml.safe_load_all((ROOT / "infra" / "k8s" / "cartintel.yaml").read_text()))
    maps = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cartintel-settings"
    ]
    assert len(maps) == 1 and yaml.safe_load(maps[0]["data"]["settings.yaml"]) == source
    path = "/etc/cartintel/settings.yaml"
    values = yaml.safe_load((ROOT / "infra" / "k8s" / "values-dagster.yaml").read_text())
    code = values["dagster-user-deployments"]["deployments"][0]
    runs = values["runLauncher"]["config"]["k8sRunLauncher"]
    scoring = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "scoring"
    )
    container = scoring["spec"]["template"]["spec"]["containers"][0]
    for env in (code["env"], runs["env"], container["env"]):
        assert {"name": "CARTINTEL_SETTINGS", "value": path} in env
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    for service in ("user-code", "daemon", "scoring"):
        spec = compose["services"][service]
        assert spec["environment"]["CARTINTEL_SETTINGS"] == path, service
        assert spec["configs"] == [{"source": "cartintel-settings", "target": path}], service
    assert compose["configs"]["cartintel-settings"]["file"] == "./settings.yaml"
    # the file is valid for the code that reads it
    monkeypatch.setenv("CARTINTEL_SETTINGS", str(ROOT / "infra" / "settings.yaml"))
    assert PlanSettings().deployed().budget == source["plan"]["budget"]
    assert RolloutSettings().deployed().pilot_regions == source["rollout"]["pilot_regions"]
