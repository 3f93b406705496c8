"""The closed loop, week by week, against the simulator's truth (`make bench` runs it; alone:
`python -m cartintel_tests.benchmarks.loop --out BENCHMARKS.md` rewrites only its section).

`cartintel demo` itself, in a throw-away folder (its own warehouse, MLflow store, Dagster
instance and settings): a randomised experiment, the models trained on it and the uplift policy
through its gate to pilot, then weeks of the closed loop with the default exploration share and
holdout. The storefront acts on each day's decisions; every week the uplift model is retrained on
every logged decision and the pilot and the retrained policy are put to their gates. Reported per
week: what the decisions truly earned (the simulator's probabilities under the chosen arms, over
doing nothing) against the oracle that knows every cart's true effects (without a budget), and
the regret between them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cartintel_assets.cli import build_parser, cmd_demo
from cartintel_assets.decisions.settings import PlanSettings
from cartintel_assets.simulation.storefront import DEMO_RUN, DEMO_STOREFRONT
from cartintel_tests.benchmarks.scale import replace_section

SECTION = "## The closed loop, week by week, against the truth"


def measure(
    sessions: int, days: int, loop_days: int, seed: int, retrain_every: int, workdir: Path
) -> pd.DataFrame:
    """One row per loop day (`cli._closed_loop`'s records), from `cartintel demo` run in
    `workdir` with a budget scaled to the traffic (the demo's per session)."""
    budget = PlanSettings().budget * sessions / DEMO_STOREFRONT.sessions_per_day
    settings = workdir / "settings.yaml"
    settings.write_text(yaml.safe_dump({"plan": {"budget": budget}}))
    env = {
        "CARTINTEL_WAREHOUSE": workdir / "warehouse.duckdb",
        "CARTINTEL_STOREFRONT": workdir / "storefront",
        "CARTINTEL_MLRUNS": workdir / "mlruns",
        "CARTINTEL_REPORTS": workdir / "reports",
        "CARTINTEL_SETTINGS": settings,
        "DAGSTER_HOME": workdir / "dagster_home",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # as `make demo` has it
    }
    saved = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI", "CARTINTEL_LANDING"]}
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    records: list[dict[str, Any]] = []
    try:
        args = build_parser().parse_args(
            [
                "demo",
                f"--sessions-per-day={sessions}",
                f"--customers={int(DEMO_STOREFRONT.n_customers * sessions / DEMO_STOREFRONT.sessions_per_day)}",
                f"--days={days}",
                f"--loop-days={loop_days}",
                f"--retrain-every={retrain_every}",
                f"--seed={seed}",
            ]
        )
        cmd_demo(args, records)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return pd.DataFrame(records)


def section(found: pd.DataFrame, sessions: int, days: int, seed: int, minutes: float) -> list[str]:
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores by"
        f" `cartintel_tests/benchmarks/loop.py` in {minutes:.0f} minutes: `cartintel demo` at"
        f" {sessions:,} sessions a day (seed {seed}), {days} days of randomised experiment, then"
        f" the closed loop with the default exploration ({PlanSettings().exploration_share:.0%}"
        " of the contactable carts, paid from the budget and expected to spend at most"
        f" {PlanSettings().exploration_budget_share:.0%} of it) and holdout (5 %), the"
        " budget scaled to the traffic, the uplift model retrained every week on every logged"
        " decision. True margin: the simulator's probabilities under the arms chosen, over doing"
        " nothing; the oracle knows every cart's true effects and has no budget.",
        "",
    ]
    if found.empty:
        lines += [
            "The loop did not run: no uplift policy passed its gate on the experiment (see the"
            " decision-quality curve above for the traffic it needs).",
            "",
        ]
        return lines
    found = found.assign(week=(found["loop_day"] - 1) // 7 + 1)
    by = [c for c in found.columns if c.startswith("by_")]
    parts = [c for c in found.columns if c.startswith("true_margin_")]
    weekly = found.groupby("week").agg(
        days=("day", "count"),
        decided=("decided", "sum"),
        **{c: (c, "sum") for c in by},
        **{c: (c, "sum") for c in parts},
        true_margin=("true_margin", "sum"),
        oracle_margin=("oracle_margin", "sum"),
    )
    lines += [
        "| week | days | decided carts | "
        + " | ".join(c.removeprefix("by_") for c in by)
        + "".join(f" | true margin of {c.removeprefix('true_margin_')}" for c in parts)
        + " | true margin | oracle (no budget) | share | regret |",
        "|---|---|---|" + "---|" * (len(by) + len(parts)) + "---|---|---|---|",
    ]
    for week, w in weekly.iterrows():
        lines.append(
            f"| {week} | {int(w['days'])} | {int(w['decided']):,} | "
            + " | ".join(f"{int(w[c]):,}" for c in by)
            + "".join(f" | {w[c]:,.0f}" for c in parts)
            + f" | {w['true_margin']:,.0f} | {w['oracle_margin']:,.0f} |"
            f" {w['true_margin'] / w['oracle_margin']:.1%} |"
            f" {w['oracle_margin'] - w['true_margin']:,.0f} |"
        )
    return [*lines, ""]


def write(path: Path, lines: list[str]) -> None:
    """Replace this section of `path` (or append it), leaving the others as they are."""
    replace_section(path, SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--sessions-per-day",
        type=int,
        default=DEMO_RUN.sessions_per_day,
        help="traffic (`make demo`'s by default); the experiment must be large enough for the"
        " gate (~20k randomised carts)",
    )
    parser.add_argument("--days", type=int, default=14, help="days of randomised experiment")
    parser.add_argument("--weeks", type=int, default=4, help="weeks of the closed loop")
    parser.add_argument("--seed", type=int, default=DEMO_STOREFRONT.seed)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    parser.add_argument("--csv", type=Path, default=None, help="also keep the daily rows here")
    parser.add_argument(
        "--from-csv",
        type=Path,
        default=None,
        help="report the daily rows of an earlier run (its --csv) instead of running; give that"
        " run's --sessions-per-day, --days, --seed and --minutes",
    )
    parser.add_argument("--minutes", type=float, default=0.0, help="with --from-csv")
    args = parser.parse_args()
    if args.from_csv:
        found = pd.read_csv(args.from_csv)
        lines = section(found, args.sessions_per_day, args.days, args.seed, args.minutes)
        write(args.out, lines)
        return
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        found = measure(args.sessions_per_day, args.days, 7 * args.weeks, args.seed, 7, workdir)
    if args.csv:
        found.to_csv(args.csv, index=False)
    minutes = (time.monotonic() - start) / 60
    write(args.out, section(found, args.sessions_per_day, args.days, args.seed, minutes))
    print(f"loop: wrote the section to {args.out}", flush=True)


if __name__ == "__main__":
    main()
