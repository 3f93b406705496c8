"""A run launcher whose run workers the daemon's run monitoring can check.

Dagster's `DefaultRunLauncher` starts each run as a process of the code-location server, but it
cannot tell the daemon whether that process still lives (`supports_check_run_worker_health` is
False), so a run whose process was killed (OOM, eviction, kill -9) stays STARTED for ever and,
with one run at a time, blocks the queue. This launcher launches the same way and answers the
health check from the process the run worker recorded at start ("Started process for run (pid:
N)"): gone, a zombie, or a newer process under a reused pid means the worker died, and run
monitoring marks the run failed, which frees the queue.

A worker that died with its code server (the server's container killed) is declared failed only
once that server answers again: the daemon's run retries (`run_retries` in dagster.yaml) need
the code location to start the retry, and Dagster gives a run up for good when it is missing at
that moment. Nothing can start while the server is down anyway, so the wait costs no run.

It needs the daemon to see the code server's processes: the same host (`make dev`, the
native production topology) or a shared PID namespace (infra/compose.yaml gives the daemon
`pid: service:user-code`). On Kubernetes the chart's K8sRunLauncher checks its own pods.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import DagsterEventType, DefaultRunLauncher

# the health-check contract of run launchers has no public name (dagster-k8s and dagster-docker
# import it from here too), nor has the code server's "loaded" answer; pinned Dagster, checked by
# test_production_topology
from dagster._api.list_repositories import sync_list_repositories_grpc
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

if TYPE_CHECKING:
    from dagster import DagsterRun

START_SLACK_S = 5.0  # a worker's process starts at most this long after its start event


def _started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    if fields[0] in ("Z", "X"):  # exited, not reaped yet
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class MonitoredRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` plus the run worker health check that run monitoring calls."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        records = self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        started = [
            (r.timestamp, int(str(md["pid"].value)))
            for r in records
            if r.dagster_event is not None
            and (md := r.dagster_event.engine_event_data.metadata)
            and "pid" in md
        ]
        if not started:  # not started yet: the start timeout of run monitoring applies
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker recorded yet")
        at, pid = started[-1]
        since = _started_at(pid)
        if since is not None and since <= at + START_SLACK_S:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} alive")
        why = f"run worker (pid {pid}) is gone" + ("; the pid was reused" if since else "")
        if not _code_server_answers(run):
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"{why}: failed once its code server answers again"
            )
        return CheckRunHealthResult(WorkerStatus.FAILED, why)


def _code_server_answers(run: DagsterRun) -> bool:
    """Whether the gRPC code server that launched `run` serves its code location (True for a
    location Dagster manages itself, as `dagster dev` does)."""
    origin = run.remote_job_origin
    location = origin.repository_origin.code_location_origin if origin else None
    if not isinstance(location, GrpcServerCodeLocationOrigin):
        return True
    try:
        sync_list_repositories_grpc(location.create_client())
    except Exception:  # unreachable, or still loading the definitions
        return False
    return True
