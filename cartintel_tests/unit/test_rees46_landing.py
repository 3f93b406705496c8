"""A real REES46 log, and a corrupted copy of it, land with every line accounted for.

The sample is REES46 Marketing Platform's "eCommerce behavior data from multi category store"
(Kaggle: mkechinov/ecommerce-behavior-data-from-multi-category-store), its first 4,999 events.
Expected figures are counted here from the CSV text, independently of the landing code.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cartintel_assets.contracts.schema import TABLES
from cartintel_assets.ingestion.ingest import ingest_partition
from cartintel_assets.ingestion.mapping import (
    EventLogMapping,
    MappingError,
    land_foreign_log,
    validate,
)

MAPPINGS = Path(__file__).resolve().parents[2] / "cartintel_assets" / "mappings"
NOW = datetime(2026, 12, 1)


@pytest.fixture(scope="module")
def rees46() -> EventLogMapping:
    return EventLogMapping.from_yaml(MAPPINGS / "rees46.yaml")


def ingest_days(landing: Path, days: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for day in days:
        for spec in TABLES:
            assert ingest_partition(
                con, spec, date.fromisoformat(day), landing, "k", NOW
            ).reconciles
    return con


def corrupt(sample: Path, out: Path) -> dict[str, int]:
    """A copy of the sample with bad lines of every kind; returns how many lines of each kind."""
    header, *lines = sample.read_text().splitlines()
    good = lines[100].split(",")

    def line(**changes: str) -> str:
        cols = dict(zip(header.split(","), good, strict=True))
        return ",".join({**cols, **changes}.values())

    bad = {
        "exact duplicate": lines[10:30],
        "future timestamp": [
            line(event_time="2099-01-01 00:00:00 UTC", user_session=f"f{i}") for i in range(3)
        ],
        "no readable time": [
            line(event_time="yesterday"),
            line(event_time="2019-13-45 00:00:00 UTC"),
        ],
        "no customer id": [line(user_id=""), line(user_id="  ")],
        "out of range": [line(event_time="2019-09-30 23:00:00 UTC", user_session="early")],
        "malformed CSV line": [",".join(good[:4]), ",".join([*good, "extra"]), "garbage"],
        "invalid_value": [
            line(price="abc", product_id="p-abc"),
            line(price="1e999", product_id="p-inf"),
        ],
        "out_of_range": [line(price="-5.00", product_id="p-neg")],
        "not_allowed_value": [line(event_type="wishlist"), line(event_type="")],
    }
    body = lines + [ln for kind in bad.values() for ln in kind]
    text = header + "\n" + "\n".join(body[:2000]) + "\n\n\n" + "\n".join(body[2000:]) + "\n"
    out.write_text(text)
    counts = {k: len(v) for k, v in bad.items()}
    counts["exact duplicate"] = sum(n - 1 for n in Counter(body).values() if n > 1)
    counts["empty"] = 2
    return counts


@pytest.mark.realdata
def test_the_real_sample_lands_whole(
    shared_data: Path, tmp_path: Path, rees46: EventLogMapping
) -> None:
    source = shared_data / "rees46_2019oct_first5k.csv"
    s = land_foreign_log(source, rees46, tmp_path, now=NOW)
    raw = pd.read_csv(source, dtype=str)
    assert s.lines == len(raw) == 4999 and s.accounted and s.rows_rejected == 0
    assert s.sessions == raw["user_session"].nunique() == 1898  # the shop's own session ids
    con = ingest_days(tmp_path, list(s.days))
    types = dict(con.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1").fetchall())
    dup = int(raw.duplicated().sum())
    assert dup == 3  # one line of the real log is there 4 times
    assert types == {"product_view": 4895 - dup, "add_to_cart": 50, "purchase": 54}
    (q,) = con.execute(
        "SELECT count(*) FROM quarantined_events WHERE rule = 'duplicate_record'"
    ).fetchall()[0]
    assert q == dup
    # the catalogue gets the category (code, else id), brand and that day's last price
    products = con.execute("SELECT product_id, category, brand, price FROM raw_products").df()
    assert len(products) == raw["product_id"].nunique()
    last = (
        raw.assign(t=raw["event_time"]).sort_values("t", kind="stable").groupby("product_id").last()
    )
    p = products.set_index("product_id").loc[last.index]
    assert (p["price"].to_numpy() == last["price"].astype(float).to_numpy()).all()
    assert (p["category"] == last["category_code"].fillna(last["category_id"])).mean() > 0.95
    assert p["brand"].notna().sum() == last["brand"].notna().sum() > 1000


@pytest.mark.realdata
def test_every_line_of_a_corrupted_copy_is_accounted_for(
    shared_data: Path, tmp_path: Path, rees46: EventLogMapping
) -> None:
    src = tmp_path / "corrupted.csv"
    kinds = corrupt(shared_data / "rees46_2019oct_first5k.csv", src)
    lines = [ln for ln in src.read_text().splitlines()[1:] if ln]
    landing = tmp_path / "landing"
    s = land_foreign_log(src, rees46, landing, first_day=date(2019, 10, 1), now=NOW)
    assert (s.lines, s.empty_lines) == (len(lines), kinds["empty"])
    assert list(s.days) == ["2019-10-01"]  # nothing stranded in a future or early folder
    rejected = [
        json.loads(x) for x in (landing / "_rejected" / "rees46.jsonl").read_text().splitlines()
    ]
    by_kind = Counter(r["reason"].split(":")[0] for r in rejected)
    for kind in (
        "future timestamp",
        "no readable time",
        "no customer id",
        "out of range",
        "malformed CSV line",
    ):
        assert by_kind[kind] == s.rejected_by_reason[kind] == kinds[kind], kind
    assert all(r["reason"] and r["record"] for r in rejected)
    con = ingest_days(landing, list(s.days))
    accepted, quarantined = con.execute(
        "SELECT sum(accepted), sum(quarantined) FROM ingestion_log WHERE table_name = 'events'"
    ).fetchall()[0]
    assert accepted + quarantined + len(rejected) == len(lines)  # every line, counted from the file
    rules = dict(con.execute("SELECT rule, count(*) FROM quarantined_events GROUP BY 1").fetchall())
    assert rules == {
        "duplicate_record": kinds["exact duplicate"],
        "invalid_value": kinds["invalid_value"],
        "out_of_range": kinds["out_of_range"],
        "not_allowed_value": 1,
        "missing_required_field": 1,  # the empty event type
    }


def test_the_mapping_is_checked_before_anything_lands(
    tmp_path: Path, rees46: EventLogMapping
) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(
        "event_time,event_type,product_id,price,user_id\n2019-10-01 00:00:00 UTC,view,1,2,3\n"
    )
    with pytest.raises(
        MappingError, match=r"\['brand', 'category_code', 'category_id', 'user_session'\]"
    ):
        validate(rees46, csv)
    doc = (MAPPINGS / "rees46.yaml").read_text()
    for old, new, message in [
        (
            "  brand: brand\n",
            "  brand: brand\n  colour: color\n",
            "unknown canonical column.*colour",
        ),
        ("  view: product_view\n", "  view: glance\n", "glance.*not canonical"),
        ("  ts: event_time\n", "", r"must map \['ts'\]"),
    ]:
        (tmp_path / "m.yaml").write_text(doc.replace(old, new))
        with pytest.raises(MappingError, match=message):
            EventLogMapping.from_yaml(tmp_path / "m.yaml")
    full = tmp_path / "full.csv"
    full.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "01.10.2019 00:00,view,1,2,,b,1.0,5,s\n"
    )
    with pytest.raises(MappingError, match=r"reads none.*\['event_time'\].*01.10.2019"):
        validate(rees46, full)
    assert not (tmp_path / "landing").exists()


@pytest.mark.realdata
def test_cart_sessions_and_labels_agree_on_the_cart_value(
    shared_data: Path, tmp_path: Path, rees46: EventLogMapping
) -> None:
    from cartintel_assets.features.labels import cart_labels
    from cartintel_assets.features.sessions import build_cart_sessions

    source = shared_data / "rees46_2019oct_first5k.csv"
    land_foreign_log(source, rees46, tmp_path, now=NOW)
    con = ingest_days(tmp_path, ["2019-10-01"])
    build_cart_sessions(con, date(2019, 10, 1))
    sessions = con.execute("SELECT session_id, cart_value FROM cart_sessions").df()
    labels = cart_labels(con, date(2019, 10, 1))[["session_id", "cart_value"]]
    # counted from the CSV: no quantity, so each cart event is one unit at the last price shown
    raw = pd.read_csv(source, dtype={"product_id": str}).drop_duplicates()
    carts = raw[raw["event_type"] == "cart"].groupby(["user_session", "product_id"]).size()
    last = raw.groupby(["user_session", "product_id"])["price"].last()
    expected = (carts * last.loc[carts.index]).groupby("user_session").sum()
    assert len(sessions) == len(labels) == len(expected) == 35  # README: 35 sessions with a cart
    got = sessions.set_index("session_id")["cart_value"]
    assert got.loc[expected.index].round(2).tolist() == expected.round(2).tolist()
    assert (labels.set_index("session_id")["cart_value"].loc[got.index] == got).all()
    assert (got > 0).all()


def test_the_cart_value_nets_removals_and_counts_a_missing_quantity_as_one_unit() -> None:
    from cartintel_assets.features.labels import cart_labels
    from cartintel_assets.features.sessions import build_cart_sessions
    from cartintel_assets.ingestion.ingest import ensure_warehouse

    con = duckdb.connect()
    ensure_warehouse(con)
    d = "DATE '2019-10-01'"
    con.execute(
        "INSERT INTO raw_sessions (session_id, customer_id, started_at, device, traffic_source,"
        f" region, partition_date, source_line, ingested_at) VALUES ('s', 'c',"
        f" TIMESTAMP '2019-10-01 10:00:00', 'web', 'direct', 'NL', {d}, 1, now())"
    )
    events = [  # seq, type, product, quantity, price
        (0, "add_to_cart", "a", None, 10.0),  # one unit at 10
        (1, "add_to_cart", "b", 2, 5.0),
        (2, "remove_from_cart", "b", 1, 5.0),
        (3, "product_view", "b", None, 6.0),  # the last price shown for b: 6
        (4, "add_to_cart", "c", 1, 3.0),
        (5, "remove_from_cart", "c", None, 3.0),  # c is out again
    ]
    for seq, kind, product, qty, price in events:
        con.execute(
            "INSERT INTO raw_events (event_id, session_id, seq, ts, event_type, product_id,"
            " quantity, price, partition_date, source_line, ingested_at) VALUES (?, 's', ?,"
            f" TIMESTAMP '2019-10-01 10:00:00' + INTERVAL (?) MINUTE, ?, ?, ?, ?, {d}, ?, now())",
            [f"e{seq}", seq, seq, kind, product, qty, price, seq],
        )
    build_cart_sessions(con, date(2019, 10, 1))
    assert con.execute("SELECT cart_value FROM cart_sessions").fetchall() == [(16.0,)]
    assert cart_labels(con, date(2019, 10, 1))["cart_value"].tolist() == [16.0]
