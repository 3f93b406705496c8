"""Ingestion accepts or quarantines every landed row, with the reason, and replaces partitions."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cartintel_assets.contracts.schema import EVENTS, SESSIONS, TABLES
from cartintel_assets.ingestion.ingest import (
    RULE_STANDARD,
    RULES,
    LandingSchemaError,
    ingest_partition,
    pseudonymise,
)
from cartintel_assets.simulation.storefront import Storefront


def _ingest_all(con: duckdb.DuckDBPyConnection, store: Storefront, landing: Path) -> dict:
    results = {}
    for i in range(store.config.days):
        for spec in TABLES:
            results[(spec.name, store.config.day(i).isoformat())] = ingest_partition(
                con, spec, store.config.day(i), landing, "test-key"
            )
    return results


@pytest.fixture(scope="module")
def loaded(
    bad_store: tuple[Storefront, Path],
) -> tuple[Storefront, Path, duckdb.DuckDBPyConnection, dict]:
    store, landing = bad_store
    con = duckdb.connect()
    return store, landing, con, _ingest_all(con, store, landing)


def test_every_landed_row_is_accepted_or_quarantined(loaded) -> None:
    store, landing, con, results = loaded
    for (name, day), r in results.items():
        assert r.reconciles, (name, day)
        accepted = con.execute(
            f"SELECT count(*) FROM raw_{name} WHERE partition_date = ?", [date.fromisoformat(day)]
        ).fetchall()[0][0]
        quarantined = con.execute(
            f"SELECT count(*) FROM quarantined_{name} WHERE partition_date = ?",
            [date.fromisoformat(day)],
        ).fetchall()[0][0]
        assert (accepted, quarantined) == (r.accepted, r.quarantined)
    for day in store.landing:
        assert results[("events", day)].landed == store.event_lines(day)


def test_each_injected_defect_is_quarantined_under_its_rule(loaded) -> None:
    store, _, con, results = loaded
    truth = store.truth_bad_rows
    assert set(truth["rule"]) <= set(RULES)
    for day, expected in (
        truth.groupby("day")["rule"].value_counts().unstack(fill_value=0).iterrows()
    ):
        got = results[("events", day)].by_rule
        assert got == {rule: int(n) for rule, n in expected.items() if n}, day
    # the quarantined lines are exactly the injected ones (duplicates: the later copy)
    q = con.execute("SELECT rule, raw_record FROM quarantined_events").df()
    ids = set()
    for raw in q["raw_record"]:
        try:
            ids.add(json.loads(raw).get("event_id"))
        except json.JSONDecodeError:
            continue
    injected = set(truth.loc[~truth["kind"].isin(["malformed_json", "missing_id"]), "event_id"])
    assert injected <= ids
    reasons = con.execute("SELECT DISTINCT rule, reason FROM quarantined_events").df()
    assert reasons["reason"].str.len().min() > 10  # every quarantined row says why


def test_customer_ids_are_pseudonymised_everywhere(loaded) -> None:
    store, _, con, _ = loaded
    raw_ids = set(store.truth_customers["customer_id"])
    for table in ("raw_customers", "raw_sessions", "raw_reviews", "raw_interventions"):
        ids = set(con.execute(f"SELECT DISTINCT customer_id FROM {table}").df()["customer_id"])
        assert ids and not ids & raw_ids, table
        assert all(i.startswith("c_") and len(i) == 34 for i in ids)
    expected = set(pseudonymise(sorted(raw_ids), "test-key"))
    assert set(con.execute("SELECT customer_id FROM raw_customers").df()["customer_id"]) == expected
    assert pseudonymise(["C1"], "a") != pseudonymise(["C1"], "b")


def test_reingesting_a_partition_replaces_it(loaded) -> None:
    store, landing, con, results = loaded
    day = store.config.day(1)
    before = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchall()[0]
    q_before = con.execute("SELECT count(*) FROM quarantined_events").fetchall()[0][0]
    again = ingest_partition(con, EVENTS, day, landing, "test-key")
    assert again.by_rule == results[("events", day.isoformat())].by_rule
    assert (
        con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_events").fetchall()[0]
        == before
    )
    assert con.execute("SELECT count(*) FROM quarantined_events").fetchall()[0][0] == q_before
    assert (
        con.execute("SELECT count(*) FROM ingestion_log WHERE table_name = 'events'").fetchall()[0][
            0
        ]
        == store.config.days
    )


def test_row_level_rules_on_hand_made_records(tmp_path: Path) -> None:
    day = date(2026, 10, 1)
    folder = tmp_path / day.isoformat()
    folder.mkdir()
    pd.DataFrame(
        {
            "customer_id": ["C1"],
            "region": ["DE"],
            "signup_date": [date(2026, 1, 1)],
            "marketing_consent": [True],
            "preferred_device": ["mobile"],
        }
    ).to_parquet(folder / "customers.parquet")
    pd.DataFrame(
        {
            "session_id": ["S1", "S2", "S1"],
            "customer_id": ["C1", "C-nobody", "C1"],
            "started_at": pd.to_datetime(
                ["2026-10-01 10:00", "2026-10-01 11:00", "2026-10-01 10:00"]
            ),
            "device": ["mobile", "mobile", "smart-fridge"],
            "traffic_source": ["direct"] * 3,
            "region": ["DE"] * 3,
        }
    ).to_parquet(folder / "sessions.parquet")
    good = {
        "event_id": "E1",
        "session_id": "S1",
        "seq": 0,
        "ts": "2026-10-01T10:01:00",
        "event_type": "search",
    }
    lines = [
        json.dumps(good),
        "",
        "[1, 2]",
        json.dumps({**good, "event_id": "E2", "ts": "yesterday"}),
        json.dumps({**good, "event_id": "E3", "event_type": "teleport"}),
        json.dumps({**good, "event_id": "E4", "event_type": "add_to_cart"}),
        json.dumps({**good, "event_id": "E5", "quantity": 0, "event_type": "search"}),
        json.dumps(good),
        # numbers DuckDB reads as DOUBLE but no price can be
        json.dumps({**good, "event_id": "E6", "price": float("inf")}),  # written Infinity
        json.dumps({**good, "event_id": "E7"})[:-1] + ', "price": NaN}',
        json.dumps({**good, "event_id": "E8"})[:-1] + ', "price": 1e400}',
    ]
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    con = duckdb.connect()
    from cartintel_assets.contracts.schema import CUSTOMERS, PRODUCTS

    ingest_partition(con, CUSTOMERS, day, tmp_path, "k")
    ingest_partition(con, PRODUCTS, day, tmp_path, "k")  # no file: zero rows, not an error
    s = ingest_partition(con, SESSIONS, day, tmp_path, "k")
    assert s.by_rule == {"unknown_customer": 1, "not_allowed_value": 1}
    e = ingest_partition(con, EVENTS, day, tmp_path, "k")
    assert e.landed == 11 and e.accepted == 1
    rules = con.execute("SELECT source_line, rule FROM quarantined_events ORDER BY 1").fetchall()
    assert rules == [
        (2, "malformed_record"),
        (3, "malformed_record"),
        (4, "invalid_value"),
        (5, "not_allowed_value"),
        (6, "missing_required_field"),
        (7, "out_of_range"),
        (8, "duplicate_record"),
        (9, "invalid_value"),
        (10, "invalid_value"),
        (11, "invalid_value"),
    ]
    reasons = con.execute(
        "SELECT reason FROM quarantined_events WHERE source_line >= 9 ORDER BY source_line"
    ).fetchall()
    assert [r for (r,) in reasons] == [
        "price=Infinity is not a finite number",
        "price=NaN is not a finite number",
        "price=1e400 is not a finite number",
    ]
    assert set(RULE_STANDARD) == set(RULES)


def test_a_parquet_file_without_required_columns_is_a_clear_error(tmp_path: Path) -> None:
    day = date(2026, 10, 1)
    (tmp_path / day.isoformat()).mkdir()
    pd.DataFrame({"session_id": ["S1"]}).to_parquet(tmp_path / day.isoformat() / "sessions.parquet")
    with pytest.raises(LandingSchemaError, match="lacks required column"):
        ingest_partition(duckdb.connect(), SESSIONS, day, tmp_path, "k")
