"""The GX suites validate what landed, before quarantine: every row-level expectation reports the
rows that break it, with the count the quarantine's SQL finds, and the partition's checks can
fail."""

from __future__ import annotations

import json
import re
import socket
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cartintel_assets.contracts.schema import (
    CUSTOMERS,
    EVENTS,
    PRODUCTS,
    SESSIONS,
    TABLES,
    TableSpec,
)
from cartintel_assets.ingestion import ingest
from cartintel_assets.quality.checks import PartitionQuality, ingest_and_validate
from cartintel_assets.quality.suites import STANDARDS, SUITES

DAY = date(2026, 10, 1)
NOW = datetime(2026, 10, 5, 12, 0)
GOOD = {
    "event_id": "E0",
    "session_id": "S1",
    "seq": 0,
    "ts": "2026-10-01T10:01:00",
    "event_type": "product_view",
    "product_id": "P1",
    "price": 10.0,
}


def _line(n: int, **changes: object) -> str:
    return json.dumps({**GOOD, "event_id": f"E{n}", "seq": n, **changes})


def _priced(n: int, price: str) -> str:
    """A line whose price is written as-is (JSON's NaN or 1e400, which json.dumps cannot)."""
    fields = {k: v for k, v in GOOD.items() if k != "price"}
    return json.dumps({**fields, "event_id": f"E{n}", "seq": n})[:-1] + f', "price": {price}}}'


# One kind of defect per case: the landed lines, the expectation that must catch them, and the
# rule the quarantine files them under.
BAD_LINES: dict[str, tuple[list[str], str, str]] = {
    "not json": (
        ['{"event_id": "E90", "session_id": '],
        "records_are_json_objects",
        "malformed_record",
    ),
    "no session": ([_line(91, session_id=None)], "session_id_not_null", "missing_required_field"),
    "product event without product": (
        [_line(92, product_id=None)],
        "product_events_name_product",
        "missing_required_field",
    ),
    "seq not a number": ([_line(93, seq="third")], "seq_parses", "invalid_value"),
    "price not a number": ([_line(94, price="cheap")], "price_parses", "invalid_value"),
    "price NaN": ([_priced(95, "NaN")], "price_parses", "invalid_value"),
    "price infinite": ([_priced(96, "1e400")], "price_finite", "invalid_value"),
    "unknown event type": (
        [_line(97, event_type="teleport")],
        "event_type_in_allowed_set",
        "not_allowed_value",
    ),
    "negative price": ([_line(98, price=-5.0)], "price_in_range", "out_of_range"),
    "future": ([_line(99, ts="2027-06-01T10:00:00")], "ts_not_in_future", "future_timestamp"),
    "unknown session": (
        [_line(100, session_id="S-NOBODY")],
        "have_known_sessions",
        "unknown_session",
    ),
    "unknown product": (
        [_line(101, product_id="P-NOTHING")],
        "have_known_products",
        "unknown_product",
    ),
    "before its session": (
        [_line(102, ts="2026-10-01T08:00:00")],
        "start_with_their_session",
        "out_of_order_timestamp",
    ),
    "the same line twice": ([_line(103), _line(103)], "event_id_unique", "duplicate_record"),
}


def _folder(root: Path) -> Path:
    folder = root / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _land(root: Path, spec: TableSpec, rows: list[dict[str, object]]) -> None:
    frame = pd.DataFrame(rows)
    for c in spec.columns:
        if c.sql_type in ("DATE", "TIMESTAMP") and c.name in frame:
            frame[c.name] = pd.to_datetime(frame[c.name])
    frame.to_parquet(_folder(root) / spec.landing_file, index=False)


def _landing(root: Path, bad: list[str]) -> None:
    customer = {"customer_id": "C1", "region": "NL", "signup_date": "2026-01-01"}
    _land(root, CUSTOMERS, [{**customer, "marketing_consent": True}])
    _land(root, PRODUCTS, [{"product_id": "P1", "category": "shoes", "price": 10.0}])
    session = {"session_id": "S1", "customer_id": "C1", "started_at": "2026-10-01T10:00:00"}
    kind = {"device": "mobile", "traffic_source": "direct", "region": "NL"}
    late = {**session, "session_id": "S2", "started_at": "2026-10-01T22:00:00"}
    _land(root, SESSIONS, [{**session, **kind}, {**late, **kind}])
    good = [_line(n, ts=f"2026-10-01T10:{n:02d}:00") for n in range(1, 6)]
    good.append(_line(0, event_id="E-LATE", session_id="S2", ts="2026-10-01T22:30:00"))
    (_folder(root) / "events.jsonl").write_text("\n".join([*good, *bad]) + "\n")


def _run(root: Path, con: duckdb.DuckDBPyConnection) -> dict[str, PartitionQuality]:
    return {
        spec.name: ingest_and_validate(con, spec, DAY, root, "k", 0.9, now=NOW)
        for spec in (CUSTOMERS, PRODUCTS, SESSIONS, EVENTS)
    }


def _checks(q: PartitionQuality) -> dict[str, tuple[bool, dict]]:
    return {o.expectation.check: (o.success, o.result) for o in q.outcomes}


def test_every_standard_is_covered_for_every_table() -> None:
    for spec in TABLES:
        standards = {e.standard for e in SUITES[spec.name]}
        assert {"accuracy", "completeness", "consistency"} <= standards, spec.name
        if spec.time_column:
            assert "timeliness" in standards
    assert set(STANDARDS) == {e.standard for suite in SUITES.values() for e in suite}


def test_a_clean_landing_passes_every_check(tmp_path: Path) -> None:
    _landing(tmp_path, [])
    quality = _run(tmp_path, duckdb.connect())
    failed = {
        name: [c for c, (ok, _) in _checks(q).items() if not ok] for name, q in quality.items()
    }
    assert failed == {"customers": [], "products": [], "sessions": [], "events": []}
    assert quality["events"].result.accepted == 6


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_each_kind_of_bad_line_fails_its_expectation_with_the_quarantines_count(
    tmp_path: Path, kind: str
) -> None:
    lines, expectation, rule = BAD_LINES[kind]
    _landing(tmp_path, lines)
    con = duckdb.connect()
    checks = _checks(_run(tmp_path, con)["events"])
    # the quarantine's count, from the table it wrote
    quarantined = dict(
        con.execute("SELECT rule, count(*) FROM quarantined_events GROUP BY 1").fetchall()
    )
    ok, result = checks[f"raw_events_{expectation}"]
    assert not ok
    if rule == "duplicate_record":  # GX counts every copy; the quarantine keeps the first
        assert quarantined == {rule: 1} and result["unexpected_count"] == 2
    else:
        assert quarantined == {rule: len(lines)} and result["unexpected_count"] == len(lines)
    # what lands in the run's metadata: the offending values, except ids linked to a shopper
    # (the event log outlives an erasure; the quarantine table holds the rows)
    assert not re.search(r'"(E\d+|S1|S2|S-NOBODY)"', json.dumps(result)), result
    if kind == "the same line twice":
        assert "partial_unexpected_list" not in result
        assert result["partial_unexpected_withheld"].startswith("2 ids")
    elif kind in ("negative price", "unknown event type"):
        assert result["partial_unexpected_list"] in (["-5.0"], ["teleport"])
    ok, agreement = checks["raw_events_expectations_match_quarantine"]
    assert ok and agreement["mismatched"] == {}
    quarantined_lines = sum(quarantined.values())
    assert checks["raw_events_rows_reconcile"] == (
        True,
        {
            "landed_lines": 6 + len(lines),
            "accepted": 6 + len(lines) - quarantined_lines,
            "quarantined": quarantined_lines,
        },
    )
    # rows breaking a mirrored expectation are quarantined: the expectation reports, the
    # quarantined share decides
    assert checks["raw_events_quarantine_share_within_limit"][0]


def test_a_rule_the_quarantine_misses_fails_the_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _landing(tmp_path, [_line(98, price=-5.0)])
    real = ingest._rule_cases
    monkeypatch.setattr(
        ingest,
        "_rule_cases",
        lambda *a: [c for c in real(*a) if c.case != "out_of_range:price"],
    )
    checks = _checks(_run(tmp_path, duckdb.connect())["events"])
    ok, agreement = checks["raw_events_expectations_match_quarantine"]
    assert not ok
    assert agreement["mismatched"] == {"out_of_range:price": {"expectations": 1, "quarantine": 0}}


def test_a_row_lost_between_landing_and_warehouse_fails_the_reconciliation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _landing(tmp_path, [])
    real = ingest.judge_staged

    def losing(con: duckdb.DuckDBPyConnection, spec, *args):  # type: ignore[no-untyped-def]
        result = real(con, spec, *args)
        if spec.name == "events":
            con.execute("DELETE FROM raw_events WHERE event_id = 'E1'")
        return result

    import cartintel_assets.quality.checks as checks_module

    monkeypatch.setattr(checks_module, "judge_staged", losing)
    checks = _checks(_run(tmp_path, duckdb.connect())["events"])
    assert checks["raw_events_rows_reconcile"] == (
        False,
        {"landed_lines": 6, "accepted": 5, "quarantined": 0},
    )


def test_an_empty_core_table_is_a_blocking_failure(tmp_path: Path) -> None:
    _landing(tmp_path, [])
    (tmp_path / DAY.isoformat() / "events.jsonl").unlink()
    quality = _run(tmp_path, duckdb.connect())["events"]
    failed = {
        o.expectation.check: o.expectation.severity for o in quality.outcomes if not o.success
    }
    # and nothing landed until the day's end: stale (a warning)
    assert failed == {
        "raw_events_not_empty": "ERROR",
        "raw_events_fresh_through_end_of_day": "WARN",
    }


def test_gx_runs_offline_and_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _landing(tmp_path, [])

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network call attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    quality = _run(tmp_path, duckdb.connect())["events"]
    assert quality.outcomes and all(o.success for o in quality.outcomes)
    out = capsys.readouterr()
    assert out.out == "" and "%|" not in out.err  # no progress bars
