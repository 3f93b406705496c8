"""Off-policy evaluation against the simulator's truth, day by day (`make bench` runs it; alone:
`python -m cartintel_tests.benchmarks.ope --out BENCHMARKS.md` rewrites only its section).

The demo storefront runs for 20 days. The X-learner is cross-fitted on the whole randomised log
(out of fold). Then, for each day's log alone, every policy (the model's greedy choice, the
oracle, each single arm to every cart) is valued by DR and by SNIPS with 95 % bootstrap
intervals, and compared with its true value: the simulator's probabilities under the same
economics. Reported per estimator: how often the interval covers the truth, the mean absolute
error per cart, and the mean interval width per cart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import load_catalogue
from cartintel_assets.decisions.economics import expected_margins, realised_margin
from cartintel_assets.decisions.ope import greedy_policy, off_policy_value, true_value
from cartintel_assets.models.uplift import (
    ARMS,
    CONTROL,
    cross_fit,
    intervention_log,
    targeting_features,
)
from cartintel_assets.simulation.storefront import DEMO_STOREFRONT, simulate
from cartintel_tests.benchmarks.scale import replace_section
from cartintel_tests.conftest import labelled_warehouse

SECTION = "## Off-policy evaluation against the truth, day by day"
MARGIN = 0.4


def measure(days: int = 20, seed: int = 7, bootstrap: int = 500) -> pd.DataFrame:
    """One row per (day, policy, estimator): truth, estimate, interval, carts."""
    cfg = dataclasses.replace(DEMO_STOREFRONT, days=days, seed=seed)
    print(f"ope: simulating {days} days of the demo storefront (seed {seed})", flush=True)
    store = simulate(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        print("ope: landing, ingesting, labelling and featurising", flush=True)
        con = labelled_warehouse(store, Path(tmp), features=True)
        log, _ = intervention_log(con)
        con.close()
    log = log.reset_index(drop=True)
    num, cat = targeting_features()
    t, y = log["treatment"].to_numpy(), log["converted_7d"].to_numpy(dtype=int)
    print(f"ope: cross-fitting the x-learner on {len(log):,} logged carts", flush=True)
    fit = cross_fit(log, t, y, "x-learner", num, cat)
    catalogue = load_catalogue()
    predicted = expected_margins(log, fit.baseline, fit.effects, catalogue, MARGIN, CONTROL)
    truth_rows = store.truth_sessions.set_index("session_id").loc[log["session_id"]]
    p0 = truth_rows[f"p_conv_{CONTROL}"].to_numpy()
    effects = pd.DataFrame({a: truth_rows[f"p_conv_{a}"].to_numpy() - p0 for a in ARMS})
    true = expected_margins(log, p0, effects, catalogue, MARGIN, CONTROL)
    realised = realised_margin(log, catalogue, MARGIN)
    policies = {"model (greedy)": greedy_policy(predicted), "oracle": greedy_policy(true)}
    policies |= {f"{a} to all": np.full(len(log), a, dtype=object) for a in ARMS}
    rows = []
    day_of = log["partition_date"].astype(str).to_numpy()
    for day in sorted(set(day_of)):
        on = np.flatnonzero(day_of == day)
        sub = log.iloc[on].reset_index(drop=True)
        for name, actions in policies.items():
            truth = true_value(actions[on], true.iloc[on].reset_index(drop=True))
            for estimator in ("dr", "snips"):
                v = off_policy_value(
                    actions[on],
                    sub,
                    realised[on],
                    predicted.iloc[on].reset_index(drop=True),
                    estimator,
                    bootstrap,
                )
                rows.append((day, name, estimator, len(on), truth, v.value, v.lo, v.hi))
        print(f"ope: {day} valued ({len(on):,} logged carts)", flush=True)
    return pd.DataFrame(
        rows, columns=["day", "policy", "estimator", "carts", "truth", "value", "lo", "hi"]
    )


def section(found: pd.DataFrame, seed: int) -> list[str]:
    found = found.assign(
        covered=(found["lo"] <= found["truth"]) & (found["truth"] <= found["hi"]),
        error=(found["value"] - found["truth"]).abs() / found["carts"],
        true_per_cart=found["truth"] / found["carts"],
        width=(found["hi"] - found["lo"]) / found["carts"],
    )
    days, carts = found["day"].nunique(), int(found.groupby("day")["carts"].first().mean())
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores by"
        " `cartintel_tests/benchmarks/ope.py`. The demo storefront (seed"
        f" {seed}) over {days} days, {carts:,} randomised carts a day on average (every"
        " consenting abandoner; each arm and control has 1/5). The X-learner's out-of-fold"
        " predictions make the model's policy and the DR estimator's model; each day's log alone"
        " values every policy. Per cart: margin units (cart value x 0.4 minus the intervention's"
        " cost).",
        "",
        "| estimator | policy | true value / cart | intervals covering the truth | mean abs. error / cart | mean 95 % width / cart |",
        "|---|---|---|---|---|---|",
    ]
    for (estimator, policy), g in found.groupby(["estimator", "policy"], sort=True):
        lines.append(
            f"| {estimator} | {policy} | {g['true_per_cart'].mean():+.2f} |"
            f" {int(g['covered'].sum())} / {len(g)} |"
            f" {g['error'].mean():.3f} | {g['width'].mean():.3f} |"
        )
    for estimator, g in found.groupby("estimator"):
        lines.append(
            f"| **{estimator}** | **all** | | **{int(g['covered'].sum())} / {len(g)}"
            f" ({g['covered'].mean():.0%})** | {g['error'].mean():.3f} | {g['width'].mean():.3f} |"
        )
    width = found["width"].mean() / 2
    lines += [
        "",
        f"One day's log values a policy within about ±{width:.1f} per cart, while the best"
        " policy (the oracle) gains a few units per cart over doing nothing: a day cannot tell"
        " good policies apart, only pooled weeks can (the width shrinks with the square root of"
        " the carts). Promotion gates on off-policy value therefore need the log of several"
        " weeks, or a model good enough for DR to narrow it further.",
    ]
    return [*lines, ""]


def write(path: Path, lines: list[str]) -> None:
    """Replace this section of `path` (or append it), leaving the others as they are."""
    replace_section(path, SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    lines = section(measure(args.days, args.seed), args.seed)
    write(args.out, lines)
    print("\n".join(lines))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
