"""Servers the tests and benchmarks start as separate processes: a free port on 127.0.0.1,
waiting until one answers (or has died, with the end of its log), and Dagster's GraphQL API."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_answers(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Poll `url` until it answers 200; raise with the log's end if `proc` exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args} exited ({proc.returncode}):\n{log.read_text()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.5)


def graphql(url: str, query: str, **variables: Any) -> dict[str, Any]:
    """The `data` of a GraphQL query (Dagster's webserver at `url`); raises if it reports errors."""
    resp = httpx.post(url, json={"query": query, "variables": variables}, timeout=60)
    resp.raise_for_status()
    out = resp.json()
    if out.get("errors"):
        raise RuntimeError(f"GraphQL errors: {out['errors']}")
    return dict(out["data"])
