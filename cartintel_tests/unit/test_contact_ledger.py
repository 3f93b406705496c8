"""The contact ledger the scoring service's worker processes share: a claim is atomic against the
contact caps (earlier contacts included) and the day's budget, whichever worker asks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from cartintel_assets.decisions.plan import ContactRules, PlanRules
from cartintel_assets.serving.ledger import ContactLedger

RULES = PlanRules(budget=10.0, contact=ContactRules(min_hours_between=16.0, max_per_week=3))
T0 = pd.Timestamp("2026-10-14 09:00")


def test_caps_and_budget_hold_across_workers(tmp_path: Path) -> None:
    a, b = ContactLedger(tmp_path / "c.sqlite"), ContactLedger(tmp_path / "c.sqlite")
    assert a.claim("c1", T0, 4.0, "r1", [], RULES) is None
    # another worker, the same customer 2 hours later: the 16 h gap holds
    assert b.claim("c1", T0 + pd.Timedelta(hours=2), 1.0, "r2", [], RULES) == (
        "contact cap: another contact within 16 h"
    )
    # an earlier contact known from the warehouse counts too, once even if known twice
    earlier = [T0 - pd.Timedelta(days=2), T0 - pd.Timedelta(days=4)]
    assert b.claim("c2", T0, 1.0, "r3", [*earlier, earlier[0]], RULES) is None
    assert b.claim("c2", T0 + pd.Timedelta(days=1), 1.0, "r4", earlier, RULES) == (
        "contact cap: more than 3 contacts in 7 days"
    )
    assert a.spent(T0.date()) == 5.0
    assert a.claim("c3", T0, 6.0, "r5", [], RULES) == "budget exhausted"
    assert a.contacts_of(["c1", "c2", "c9"]) == {"c1": [T0], "c2": [T0]}


def test_concurrent_claims_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ledger = ContactLedger(path)

    def claim(i: int) -> str | None:
        return ContactLedger(path).claim(f"c{i}", T0, 1.0, f"r{i}", [], RULES)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(40)))
    assert results.count(None) == 10 and ledger.spent(T0.date()) == 10.0
    assert set(results) == {None, "budget exhausted"}
