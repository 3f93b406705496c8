"""`cartintel dev` serves the code location through workspace.yaml and stops when told to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cartintel_assets.definitions import defs
from cartintel_tests.processes import free_port, graphql

ROOT = Path(__file__).resolve().parents[2]
QUERY = "{ assetNodes { assetKey { path } groupName hasAssetChecks } }"


def test_dev_serves_the_workspace_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DO_NOT_TRACK": "true"}
    cli = str(Path(sys.executable).with_name("cartintel"))

    def ignore_sigint() -> None:  # what a shell does to a job started with `&`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [cli, "dev", "--workspace", "workspace.yaml", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=ignore_sigint,
        start_new_session=True,
    )
    try:
        deadline, data = time.monotonic() + 120, None
        while time.monotonic() < deadline and data is None:
            try:
                data = graphql(f"http://127.0.0.1:{port}/graphql", QUERY)
            except (httpx.HTTPError, RuntimeError):
                data = None
            if not (data and data["assetNodes"]):  # the code location is still loading
                data = None
                time.sleep(1)
        assert data is not None, "the Dagster UI did not serve the code location within 120 s"
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        graph = defs.resolve_asset_graph()
        groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
        assert {n["groupName"] for n in nodes.values()} == groups  # what the code defines
        assert len(nodes) == len(graph.get_all_asset_keys())
        assert nodes["raw_events"]["hasAssetChecks"]
        assert (tmp_path / "home" / "dagster.yaml").exists()  # a persistent instance
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
