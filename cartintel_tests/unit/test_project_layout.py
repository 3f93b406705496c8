"""The code location is wired the way the README and the Dagster tools expect."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import yaml

from cartintel_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_and_pyproject_point_at_the_same_module() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (
        module
        == py["tool"]["dagster"]["module_name"]
        == py["tool"]["dg"]["project"]["code_location_target_module"]
    )


def test_dagster_cli_lists_ingestion_and_quality_assets() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "list", "-m", module],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    ).stdout.split()
    assert {"raw_events", "quarantined_events", "raw_sessions", "data_quality_scorecard"} <= set(
        out
    )


def test_definitions_load_with_every_job_resolved() -> None:
    dg.Definitions.validate_loadable(defs)
    for job in (
        "storefront_daily_job",
        "abandonment_labels_job",
        "abandonment_training_job",
        "monitoring_job",
        "performance_job",
        "promote_model_job",
        "rollback_model_job",
        "reporting_job",
        "erasure_job",
    ):
        assert defs.resolve_job_def(job).name == job


def test_every_asset_has_a_group_and_a_description() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in {
            "ingestion",
            "quality",
            "features",
            "abandonment",
            "friction",
            "segmentation",
            "uplift",
            "monitoring",
            "registry",
            "reporting",
            "privacy",
        }, key
        assert node.description, key


# The layering, bottom up: a package may import its own floor's and lower floors' packages, never a
# higher one. Everything below `resources` is pure Python with no Dagster import.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("settings", "contracts"),
    ("warehouse",),
    ("ingestion", "simulation"),
    ("quality",),
    ("features",),
    ("models",),
    ("engines", "decisions"),
    ("registry",),
    ("monitoring", "reporting"),
    ("serving", "privacy"),
    ("resources",),
    ("defs",),
    ("definitions",),
    ("cli",),
)
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
DAGSTER_LAYER = FLOOR["resources"]
PACKAGE = ROOT / "cartintel_assets"


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at the top or inside a function."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module]
            out += [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _sources() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50, "the package's modules were not found"
    return paths


def test_every_package_has_a_floor_and_no_import_runs_upwards() -> None:
    upward = []
    for path in _sources():
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in FLOOR, f"{own} is not in the layering: give it a floor in FLOORS"
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "cartintel_assets" or len(parts) < 2 or parts[1] == own:
                continue
            if parts[1] in FLOOR and FLOOR[parts[1]] > FLOOR[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, "imports running upwards:\n" + "\n".join(upward)


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    modules = {_module(p): p for p in _sources()}
    graph = {m: {n for n in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        assert m not in stack, "import cycle: " + " -> ".join([*stack[stack.index(m) :], m])
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, [*stack, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    assert len(done) == len(modules)


def test_only_the_dagster_layer_imports_dagster() -> None:
    offenders = []
    for path in _sources():
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__" or FLOOR[own] >= DAGSTER_LAYER:
            continue
        offenders += [
            f"{path.relative_to(ROOT)} imports {n}"
            for n in _imports(path)
            if n.split(".")[0].startswith("dagster")
        ]
    assert not offenders, "\n".join(offenders)


# the one contract with no public name: a run launcher's worker health check (run monitoring)
PRIVATE_NEEDED = {
    ("launcher.py", "dagster._core.launcher"),
    ("launcher.py", "dagster._api.list_repositories"),
    ("launcher.py", "dagster._core.remote_origin"),
}


def _needed(path: Path, name: str) -> bool:
    return any(path.name == f and name.startswith(m) for f, m in PRIVATE_NEEDED)


def test_no_private_or_legacy_library_api_is_imported() -> None:
    """Verdicts rest on public APIs: Evidently's legacy package and any private module may
    change in the next release."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {n}"
        for path in _sources()
        for n in _imports(path)
        if n.split(".")[:2] == ["evidently", "legacy"]
        or ("._" in n and not n.startswith("cartintel") and not _needed(path, n))
    ]
    assert not offenders, "\n".join(offenders)


# MLflow's module-level ("fluent") calls that read or set its global tracking URI or active run
FLUENT_MLFLOW = re.compile(
    r"\bmlflow\.(set_tracking_uri|set_registry_uri|start_run|end_run|active_run|log_\w+|set_tag"
    r"|set_tags|register_model|create_experiment|get_experiment_by_name|search_\w+"
    r"|pyfunc\.log_model)\(|\bMlflowClient\(\)"
)


def test_mlflow_is_addressed_through_an_explicit_client() -> None:
    """Every MLflow call goes through a `Store`'s own client: no global URI, no active run (the
    test session also points MLflow's global URI nowhere, so a missed call fails at run time)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in _sources()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if FLUENT_MLFLOW.search(line)
    ]
    assert len(_sources()) > 50
    assert not offenders, "\n".join(offenders)


def test_tests_live_in_their_tiers() -> None:
    tiers = {"unit", "model", "pipelines", "system"}
    found = sorted((ROOT / "cartintel_tests").rglob("test_*.py"))
    assert len(found) > 20, "no test files found"
    misplaced = [p for p in found if p.relative_to(ROOT / "cartintel_tests").parts[0] not in tiers]
    assert not misplaced, misplaced
    assert {p.relative_to(ROOT / "cartintel_tests").parts[0] for p in found} == tiers
