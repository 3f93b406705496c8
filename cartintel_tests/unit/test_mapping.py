"""Bring your own event log: the real OTTO sessions land through the mapping and ingest cleanly."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cartintel_assets.contracts.schema import TABLES
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.ingestion.mapping import EventLogMapping, land_foreign_log

OTTO_MAPPING = Path(__file__).resolve().parents[2] / "cartintel_assets" / "mappings" / "otto.yaml"


@pytest.mark.realdata
def test_otto_sessions_ingest_through_the_mapping(shared_data: Path, tmp_path: Path) -> None:
    mapping = EventLogMapping.from_yaml(OTTO_MAPPING)
    summary = land_foreign_log(shared_data / "otto_sessions_fixture.csv", mapping, tmp_path)
    assert (summary.lines, summary.events_landed, summary.rows_rejected) == (862, 862, 0)
    con = duckdb.connect()
    landed = accepted = 0
    for day in summary.days:
        for spec in TABLES:
            r = ingest_partition(con, spec, date.fromisoformat(day), tmp_path, "k")
            assert r.reconciles
            if spec.name == "events":
                landed, accepted = landed + r.landed, accepted + r.accepted
    assert landed == accepted == 862  # README facts: clicks 800 / carts 52 / orders 10
    counts = dict(con.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1").fetchall())
    assert counts == {"product_view": 800, "add_to_cart": 52, "purchase": 10}
    assert (
        con.execute("SELECT count(DISTINCT customer_id) FROM raw_sessions").fetchall()[0][0] == 20
    )
    # re-sessionised: within a session no gap exceeds 30 min; consecutive sessions of a user are > 30 min apart
    ev = con.execute(
        "SELECT s.customer_id, e.session_id, e.ts FROM raw_events e JOIN raw_sessions s USING (session_id) ORDER BY 1, 3, e.seq"
    ).df()
    gaps = ev.groupby("session_id")["ts"].diff().dt.total_seconds().dropna()
    assert gaps.max() <= 30 * 60
    bounds = ev.groupby("session_id").agg(
        customer=("customer_id", "first"), start=("ts", "min"), end=("ts", "max")
    )
    bounds = bounds.sort_values(["customer", "start"])
    between = (
        (bounds["start"] - bounds.groupby("customer")["end"].shift()).dt.total_seconds().dropna()
    )
    assert between.min() > 30 * 60
    assert summary.sessions == len(bounds) > 20


def test_unreadable_times_and_unknown_event_names_are_kept_not_dropped(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    pd.DataFrame(
        {
            "session": ["1", "1", "2", ""],
            "aid": ["10", "11", "12", "13"],
            "ts": ["1659304800000", "oops", "1659304900000", "1659305000000"],
            "type": ["clicks", "carts", "wishlist", "clicks"],
        }
    ).to_csv(csv, index=False)
    mapping = EventLogMapping.from_yaml(OTTO_MAPPING)
    s = land_foreign_log(csv, mapping, tmp_path / "landing")
    assert (s.lines, s.events_landed, s.rows_rejected) == (4, 2, 2)
    rejected = (tmp_path / "landing" / "_rejected" / "otto.jsonl").read_text().splitlines()
    assert len(rejected) == 2 and "no readable time" in rejected[0] + rejected[1]
    con = duckdb.connect()
    for spec in TABLES:
        ingest_partition(con, spec, date(2022, 7, 31), tmp_path / "landing", "k")
    assert (
        con.execute("SELECT rule, reason FROM quarantined_events").fetchall()[0][0]
        == "not_allowed_value"
    )


def test_sessions_are_cut_at_inactivity_and_times_read_in_each_format(tmp_path: Path) -> None:
    rows = [  # customer, time as epoch seconds
        ("a", "1659304800"),  # 22:00
        ("a", "1659306000"),  # 22:20: same session
        ("a", "1659308400"),  # 23:00: 40 minutes later, a new session
        ("b", "1659301200"),  # 21:00
    ]
    csv = tmp_path / "log.csv"
    csv.write_text("session,aid,ts,type\n" + "".join(f"{c},1,{t},clicks\n" for c, t in rows))
    doc = OTTO_MAPPING.read_text().replace("epoch_ms", "epoch_s")
    (tmp_path / "m.yaml").write_text(doc)
    s = land_foreign_log(csv, EventLogMapping.from_yaml(tmp_path / "m.yaml"), tmp_path / "l")
    assert (s.sessions, s.days) == (3, {"2022-07-31": 4})
    ev = pd.read_json(tmp_path / "l" / "2022-07-31" / "events.jsonl", lines=True)
    by_session = ev.groupby("session_id")["seq"].apply(list).sort_values().tolist()
    assert sorted(by_session, key=len) == [[0], [0], [0, 1]]
    assert str(pd.to_datetime(ev["ts"]).min()) == "2022-07-31 21:00:00"
    # a strftime pattern, in a file written with another day order
    csv.write_text("session,aid,ts,type\na,1,31/07/2022 22:00:00,clicks\n")
    (tmp_path / "m.yaml").write_text(doc.replace("epoch_s", '"%d/%m/%Y %H:%M:%S"'))
    s = land_foreign_log(csv, EventLogMapping.from_yaml(tmp_path / "m.yaml"), tmp_path / "l2")
    ev = pd.read_json(tmp_path / "l2" / "2022-07-31" / "events.jsonl", lines=True)
    assert ev["ts"].tolist() == ["2022-07-31T22:00:00.000"]


def test_a_log_saved_with_a_byte_order_mark_and_crlf_lines_lands(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_bytes(
        "\ufeffsession,aid,ts,type\r\n1,10,1659304800000,clicks\r\n1,11,1659304900000,carts\r\n".encode()
    )
    s = land_foreign_log(csv, EventLogMapping.from_yaml(OTTO_MAPPING), tmp_path / "landing")
    assert (s.lines, s.events_landed, s.rows_rejected, s.accounted) == (2, 2, 0, True)
