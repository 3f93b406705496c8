"""The code location is wired the way the README and the Dagster tools expect."""

from __future__ import annotations

import ast
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
        }, key
        assert node.description, key


def test_pure_ml_code_does_not_import_dagster() -> None:
    for path in (ROOT / "cartintel_assets" / "ml").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0].startswith("dagster") for n in names), path
