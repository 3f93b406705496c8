"""The GX suites catch what they promise, offline and quietly."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from cartintel_assets.ml.quality import STANDARDS, SUITES, run_suite
from cartintel_assets.ml.schema import TABLES


def _events_frame(**overrides: list) -> pd.DataFrame:
    base = {
        "event_id": ["E1", "E2", "E3", "E4"],
        "session_id": ["S1"] * 4,
        "seq": [0, 1, 2, 3],
        "ts": pd.to_datetime(
            ["2026-10-01 10:00", "2026-10-01 10:01", "2026-10-01 10:02", "2026-10-01 10:03"]
        ),
        "event_type": ["product_view", "add_to_cart", "begin_checkout", "purchase"],
        "product_id": ["P1", "P1", None, None],
        "quantity": [None, 1, None, None],
        "price": [10.0, 10.0, None, None],
        "shipping_cost": [None, None, None, None],
        "delivery_days": [None, None, None, None],
        "coupon_code": [None] * 4,
        "order_value": [None, None, None, 10.0],
        "sessions_known": [True] * 4,
        "session_id_known": [True] * 4,
        "product_id_known": [True] * 4,
        "in_partition_window": [True] * 4,
        "hours_before_partition_end": [13.9, 13.8, 13.7, 1.5],
        "product_named_if_needed": [True] * 4,
        "ts_follows_seq": [True] * 4,
        "purchase_after_cart": [None, None, None, True],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_every_standard_is_covered_for_every_table() -> None:
    for spec in TABLES:
        standards = {e.standard for e in SUITES[spec.name]}
        assert {"accuracy", "completeness", "consistency"} <= standards, spec.name
        if spec.time_column:
            assert "timeliness" in standards
    assert set(STANDARDS) == {e.standard for suite in SUITES.values() for e in suite}


def test_clean_frame_passes_everything() -> None:
    outcomes = run_suite(SUITES["events"], _events_frame(), "raw_events")
    assert [o.expectation.check for o in outcomes if not o.success] == []
    assert len(outcomes) == len(SUITES["events"])


def test_each_kind_of_defect_fails_its_expectation() -> None:
    frame = _events_frame(
        event_id=["E1", "E1", "E3", None],
        event_type=["product_view", "teleport", "begin_checkout", "purchase"],
        price=[-1.0, 10.0, None, None],
        session_id_known=[True, False, True, True],
        ts_follows_seq=[True, True, False, True],
        purchase_after_cart=[None, None, None, False],
        in_partition_window=[False, True, True, True],
        hours_before_partition_end=[9.0, 8.0, 7.0, 6.0],  # the feed stopped at 18:00
    )
    failed = {
        o.expectation.check: o
        for o in run_suite(SUITES["events"], frame, "raw_events")
        if not o.success
    }
    assert set(failed) == {
        "raw_events_event_id_not_null",
        "raw_events_event_type_in_allowed_set",
        "raw_events_price_in_range",
        "raw_events_event_id_unique",
        "raw_events_have_known_sessions",
        "raw_events_follow_session_order",
        "raw_events_purchase_after_cart",
        "raw_events_on_time",
        "raw_events_fresh_through_end_of_day",
    }
    assert failed["raw_events_price_in_range"].unexpected_count == 1
    # results become Dagster metadata, which accepts plain Python values only
    assert all(type(v).__module__ == "builtins" for o in failed.values() for v in o.result.values())
    assert failed["raw_events_on_time"].expectation.severity == "WARN"
    assert failed["raw_events_have_known_sessions"].expectation.severity == "ERROR"


def test_empty_core_table_is_a_blocking_failure() -> None:
    empty = _events_frame().iloc[0:0]
    outcomes = run_suite(SUITES["events"], empty, "raw_events")
    failed = {o.expectation.check: o.expectation.severity for o in outcomes if not o.success}
    assert failed["raw_events_not_empty"] == "ERROR"
    assert set(failed) <= {"raw_events_not_empty", "raw_events_fresh_through_end_of_day"}


def test_gx_runs_offline_and_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network call attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    outcomes = run_suite(SUITES["events"], _events_frame(), "raw_events")
    assert all(o.success for o in outcomes)
    out = capsys.readouterr()
    assert out.out == "" and "%|" not in out.err  # no progress bars
