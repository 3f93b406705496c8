"""The scoring service under load, side by side with `mlflow models serve` on the same risk model.

Each server runs as a separate process with 2 workers on 127.0.0.1; wrk (Debian's package) loads
each from a third process at concurrency 1 and 16 with the same ~20-event carts: the full `/score`
(point-in-time features, risk, reason codes, segment, uplift, action, decision logging) against
MLflow's `/invocations` (risk only, on the cart's ready-made feature row), and the issue's
yardstick, a bare FastAPI endpoint running `inplace_predict` on the encoded row, which shows how
fast this machine answers the cheapest possible request in this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import DEFAULT_CATALOGUE
from cartintel_assets.models.abandonment import BoostedModel
from cartintel_assets.models.uplift import ARMS, UpliftModel, session_facts
from cartintel_assets.registry.names import ABANDONMENT_MODEL as RISK_MODEL
from cartintel_assets.registry.names import UPLIFT_MODEL
from cartintel_assets.registry.registration import log_risk_model, log_uplift_model, register
from cartintel_assets.registry.tracking import Store
from cartintel_assets.serving.schemas import ScoreRequest
from cartintel_tests.processes import free_port, wait_until_answers

DURATION_S = 15
# each connection cycles through the carts of a JSON-lines file, from a random start
_LUA = """local bodies = {{}}
for line in io.lines("{body}") do bodies[#bodies + 1] = line end
math.randomseed(tonumber(tostring({{}}):sub(8), 16) or os.time())
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, bodies[i])
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: Path, connections: int, seconds: int) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) measured by wrk, plus failed requests; `body` is a
    JSON-lines file of request bodies."""
    script = body.with_suffix(".lua")
    script.write_text(_LUA.format(body=body))
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, float] = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk's output:\n{out}")
        found[f"p{pct}_ms"] = float(m.group(1)) * _UNITS[m.group(2)]
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    found["rps"] = float(rps.group(1)) if rps else 0.0
    found["failed"] = float(bad.group(1)) if bad else 0.0
    found["failed"] += sum(int(g) for g in errors.groups()) if errors else 0
    print(
        "\n".join(f"    wrk: {line.strip()}" for line in out.splitlines() if line.strip()),
        flush=True,
    )
    return found


def sample_carts(landing: Path, day: str, n: int = 200) -> list[dict[str, Any]]:
    """Real sessions of the day with ~20 events (15 to 25) and a cart, as /score bodies (the
    shop's raw ids), valid against the API's schema."""
    sessions = pd.read_parquet(landing / day / "sessions.parquet").set_index("session_id")
    lines = []
    for line in (landing / day / "events.jsonl").read_text().splitlines():
        try:  # a landing file may hold defective lines (ingestion quarantines them)
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    events = pd.DataFrame([r for r in lines if isinstance(r, dict)])
    out: list[dict[str, Any]] = []
    for sid, ev in events.groupby("session_id"):
        kinds = set(ev["event_type"])
        if not 15 <= len(ev) <= 25 or "add_to_cart" not in kinds or "purchase" in kinds:
            continue
        if sid not in sessions.index:
            continue
        s = {"session_id": sid, **sessions.loc[sid].to_dict()}
        rows = [
            {k: v for k, v in r.items() if not (v is None or (isinstance(v, float) and pd.isna(v)))}
            for r in ev.sort_values("seq").to_dict("records")
        ]
        body = json.loads(json.dumps({"session": s, "events": rows}, default=str))
        try:
            ScoreRequest.model_validate(body)
        except ValueError:
            continue
        out.append(body)
        if len(out) == n:
            break
    if not out:
        raise LookupError(f"no session of {day} with 15-25 events and a cart")
    return out


def serving_stage(
    db: Path,
    landing: Path,
    day: str,
    risk: BoostedModel,
    uplift: UpliftModel,
    features: pd.DataFrame,
    k: int,
) -> list[str]:
    """Register the models in a throw-away registry, start both servers, load each with wrk."""
    if shutil.which("wrk") is None:
        raise FileNotFoundError("wrk is not installed: `make bench` installs it")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        store = Store(uri, tmp / "artifacts")
        experiment = store.experiment_id("bench")
        with store.run(experiment) as run:
            logged = log_risk_model(run, risk, features.head(50))
            register(store, logged, RISK_MODEL, "challenger", {})
        con = duckdb.connect(str(db), read_only=True)
        example = features.merge(session_facts(con, date.fromisoformat(day)), on="session_id")
        con.close()
        with store.run(experiment) as run:
            logged = log_uplift_model(run, uplift, example.head(50), str(DEFAULT_CATALOGUE), 0.4)
            register(store, logged, UPLIFT_MODEL, "challenger", {"allowed_arms": ",".join(ARMS)})
        carts = sample_carts(landing, day)
        ours_body = tmp / "score.jsonl"
        ours_body.write_text("\n".join(json.dumps(b) for b in carts) + "\n")
        ids = [b["session"]["session_id"] for b in carts]
        rows = risk.typed(features.set_index("session_id").loc[ids].reset_index())
        theirs_body = tmp / "invocations.jsonl"
        theirs_body.write_text(
            "\n".join(
                json.dumps({"dataframe_split": rows.iloc[[i]].to_dict(orient="split")}, default=str)
                for i in range(len(rows))
            )
            + "\n"
        )
        bare_body = tmp / "bare.jsonl"
        matrix = risk.matrix(rows)
        bare_body.write_text(
            "\n".join(
                json.dumps({"x": [None if np.isnan(v) else float(v) for v in r]}) for r in matrix
            )
            + "\n"
        )
        risk.save(tmp / "bare_model")
        env = {
            **os.environ,
            "BARE_MODEL_DIR": str(tmp / "bare_model"),
            "MLFLOW_TRACKING_URI": uri,
            "CARTINTEL_WAREHOUSE": str(db),
            "CARTINTEL_PSEUDONYM_KEY": "bench",
            "CARTINTEL_REPORTS": str(tmp / "reports"),
            "OMP_NUM_THREADS": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        bindir = Path(sys.executable).parent
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # mlflow execs `uvicorn`
        p_ours, p_theirs, p_bare = free_port(), free_port(), free_port()
        servers = {
            "cartintel serve (full /score)": (
                [
                    str(bindir / "cartintel"),
                    "serve",
                    "--port",
                    str(p_ours),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                    "--no-shadow",
                ],
                f"http://127.0.0.1:{p_ours}",
                "/health",
                "/score",
                ours_body,
            ),
            "mlflow models serve (risk only)": (
                [
                    str(bindir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{RISK_MODEL}@challenger",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(p_theirs),
                    "-w",
                    "2",
                ],
                f"http://127.0.0.1:{p_theirs}",
                "/ping",
                "/invocations",
                theirs_body,
            ),
            "bare FastAPI + inplace_predict (yardstick)": (
                [
                    str(bindir / "uvicorn"),
                    "--factory",
                    "cartintel_tests.benchmarks.bare_server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(p_bare),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                ],
                f"http://127.0.0.1:{p_bare}",
                "/ping",
                "/predict",
                bare_body,
            ),
        }
        results: dict[str, dict[int, dict[str, float]]] = {}
        for name, (cmd, base, health, path, payload) in servers.items():
            print(f"  serving: starting {name}", flush=True)
            # to a file: a pipe nobody reads fills up with access logs and stalls the server
            log = tmp / f"server-{len(results)}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_until_answers(base + health, proc, log, 600)
                check = httpx.post(
                    base + path,
                    content=payload.read_text().splitlines()[0],
                    headers={"content-type": "application/json"},
                    timeout=30,
                )
                if check.status_code != 200:
                    raise RuntimeError(f"{name} refused a cart: {check.status_code} {check.text}")
                wrk(base + path, payload, 4, 3)  # warm-up
                results[name] = {}
                for c in (1, 16):
                    print(
                        f"  serving: {name}, wrk at concurrency {c} for {DURATION_S} s", flush=True
                    )
                    results[name][c] = wrk(base + path, payload, c, DURATION_S)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    rows = [
        f"| {k:,}k | {name} | {c} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {int(r['failed'])} |"
        for name, by_c in results.items()
        for c, r in by_c.items()
    ]
    ours, theirs, bare = results.values()
    # more connections must not mean less throughput: if MLflow answers at 16 less than half
    # what it answers at 1, it stalled in this run, and a ratio against it would flatter us
    stalled = theirs[16]["rps"] < 0.5 * theirs[1]["rps"]
    ratios = [
        f"{ours[1]['rps'] / theirs[1]['rps']:.2f}×" if theirs[1]["rps"] else "n/a",
        f"n/a (mlflow stalled: {theirs[16]['rps']:.0f} req/s)"
        if stalled
        else f"{ours[16]['rps'] / theirs[16]['rps']:.2f}×",
    ]
    rows.append(
        f"| {k:,}k | **ratio cartintel / mlflow** | 1 · 16 | **{' · '.join(ratios)}** | | | |"
    )
    # the p99 target was set where the yardstick answered at p99 ~1 ms; how far it is today
    rows.append(
        f"| {k:,}k | **p99 at concurrency 1: cartintel / yardstick** | 1 | | |"
        f" **{ours[1]['p99_ms'] / max(bare[1]['p99_ms'], 1e-9):.1f}×** | |"
    )
    return rows
