"""A shop's own 2019 log, from the command line: land it with the bundled REES46 mapping, then
`cartintel ingest` runs the Dagster daily job on its day and accounts for every line; the
segmentation runs on it, and what 2.5 hours of log cannot support (final 7-day labels, hence a
risk model, its scores and their drift) is refused with what to land."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest


def cartintel(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("cartintel")
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.realdata
def test_a_2019_log_lands_and_ingests_from_the_command_line(
    shared_data: Path, tmp_path: Path
) -> None:
    source = shared_data / "rees46_2019oct_first5k.csv"
    env = {
        **os.environ,
        "CARTINTEL_LANDING": str(tmp_path / "landing"),
        "CARTINTEL_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "CARTINTEL_MLRUNS": str(tmp_path / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "CARTINTEL_REPORTS": str(tmp_path / "reports"),
        "CARTINTEL_SETTINGS": str(tmp_path / "cartintel.yaml"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    landed = cartintel(["land-events", "--source", str(source), "--mapping", "rees46"], env)
    assert landed.returncode == 0, landed.stderr
    # a day before the partitions (which now start at the landed 2019-10-01) is named, not an
    # "Invariant failed" from deep inside Dagster
    early = cartintel(["ingest", "--from", "2019-09-01"], env)
    assert early.returncode == 2
    assert "2019-09-01 is outside the daily partitions 2019-10-01.." in early.stderr
    assert "partitions.first_day" in early.stderr
    done = cartintel(["ingest"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4,999 lines = 4,996 accepted + 3 quarantined + 0 rejected" in done.stdout
    assert "every line accounted for" in done.stdout
    raw = pd.read_csv(source, dtype=str)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        (events,) = con.execute("SELECT count(*) FROM raw_events").fetchall()[0]
        assert events == len(raw.drop_duplicates()) == 4996
        carts = con.execute("SELECT count(*), min(partition_date) FROM cart_sessions").fetchall()
        assert carts[0][0] == raw.loc[raw["event_type"] == "cart", "user_session"].nunique() == 35
        assert str(carts[0][1]) == "2019-10-01"
        labelled = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE abandoned) FROM abandonment_labels"
        ).fetchall()[0]
        features = con.execute("SELECT * FROM session_features").df()
    # what a bare event log cannot supply is missing, not zero, and the asset's metadata says so
    absent = ["shipping_cost", "shipping_share", "delivery_days", "review_rating", "review_count"]
    assert len(features) == 35 and features[absent].isna().all().all()
    assert features["carted_on_promotion"].isna().all()
    assert (features["cart_value"] > 0).all() and features["n_cart_adds"].min() >= 1
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("session_features"))
        accounting = instance.get_latest_materialization_event(dg.AssetKey("landed_log_accounting"))
    assert event is not None and event.asset_materialization is not None
    listed = event.asset_materialization.metadata["unavailable_features"].value
    assert set(absent) | {"carted_on_promotion", "device", "region"} <= set(listed)  # type: ignore[arg-type]
    assert "cart_value" not in listed  # type: ignore[operator]
    assert accounting is not None and accounting.asset_materialization is not None
    assert accounting.asset_materialization.metadata["lines"].value == 4999
    bought = set(raw.loc[raw["event_type"] == "purchase", "user_session"])
    carted = set(raw.loc[raw["event_type"] == "cart", "user_session"])
    assert labelled == (35, len(carted - bought)) == (35, 24)  # README: 24 without a purchase

    # the rest of the chain, as a user runs it from Dagster's CLI on the same instance
    def job(name: str, *tags: str) -> subprocess.CompletedProcess[str]:
        dagster = str(Path(sys.executable).with_name("dagster"))
        args = [dagster, "job", "execute", "-m", "cartintel_assets.definitions", "-j", name, *tags]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)

    segmented = job("segmentation_job")
    assert segmented.returncode == 0, segmented.stdout[-3000:] + segmented.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        segments = con.execute("SELECT * FROM customer_segments").df()
        carting = con.execute("SELECT DISTINCT customer_id FROM cart_sessions").df()
    # every shopper of the log, once, with all of their sessions (counted from the CSV)
    assert len(segments) == segments["customer_id"].nunique() == raw["user_id"].nunique() == 1747
    per_user = raw.groupby("user_id")["user_session"].nunique()
    assert segments["sessions"].sum() == per_user.sum() == 1898
    assert sorted(segments["sessions"].tolist()) == sorted(per_user.tolist())
    assert set(carting["customer_id"]) <= set(segments["customer_id"])
    assert segments["segment_id"].nunique() >= 3 and segments["probability"].between(0, 1).all()
    # 2.5 hours of log cannot give a final 7-day label: training refuses and says what to land
    trained = job("abandonment_training_job")
    assert trained.returncode != 0
    said = trained.stdout + trained.stderr
    assert "none of the 35 labelled carts has a final label yet" in said, said[-3000:]
    assert "the landed events end on 2019-10-01" in said and "closes on 2019-10-08" in said
    # so there is no model to score or monitor with, and scoring says which one is missing
    scored = job("abandonment_scoring_job", "--tags", '{"dagster/partition": "2019-10-01"}')
    assert scored.returncode != 0
    assert "has the alias 'challenger': train one" in scored.stdout + scored.stderr
    friction = job("friction_job")
    assert friction.returncode != 0
    assert "0 carts with a final label are too few" in friction.stdout + friction.stderr

    # a shopper of the log asks to be erased: every line of theirs leaves the landing and the
    # warehouse, and re-ingesting the day still accounts for every line of the source
    who = raw["user_id"].value_counts().index[0]
    theirs = int((raw["user_id"] == who).sum())  # counted from the CSV
    erased = cartintel(["erase", "--customer", str(who)], env)
    assert erased.returncode == 0, erased.stdout[-3000:] + erased.stderr[-3000:]
    again = cartintel(["ingest"], env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"+ {theirs:,} erased: every line accounted for" in again.stdout, again.stdout[-2000:]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        (left,) = con.execute("SELECT count(*) FROM raw_events").fetchall()[0]
    assert left == 4996 - theirs
