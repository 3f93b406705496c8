"""The `cartintel` command's simulate and land-events subcommands."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cartintel_assets.cli import main


def test_simulate_writes_landing_files_and_truth_with_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store"
    args = [
        "simulate",
        "--out",
        str(out),
        "--days",
        "2",
        "--sessions-per-day",
        "200",
        "--customers",
        "800",
        "--products",
        "60",
    ]
    assert main([*args, "--bad-row-rate", "0.01", "--drift", "shipping_cost:1:0.5:DE"]) == 0
    printed = capsys.readouterr().out
    assert "sessions and outcomes" in printed and "done:" in printed
    days = sorted(p.name for p in (out / "landing").iterdir())
    assert days == ["2026-10-01", "2026-10-02"]
    for name in (
        "customers.parquet",
        "products.parquet",
        "shipping_quotes.parquet",
        "sessions.parquet",
        "events.jsonl",
        "reviews.jsonl",
        "interventions.parquet",
    ):
        assert (out / "landing" / days[0] / name).exists(), name
    config = json.loads((out / "truth" / "config.json").read_text())
    assert config["drift"] == [
        {"start_day": 1, "kind": "shipping_cost", "magnitude": 0.5, "region": "DE"}
    ]
    assert len(pd.read_parquet(out / "truth" / "bad_rows.parquet")) > 0
    # regenerating replaces the storefront instead of mixing two
    assert main([*args, "--days", "1"]) == 0
    assert sorted(p.name for p in (out / "landing").iterdir()) == ["2026-10-01"]


def test_bad_options_are_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="drift spec"):
        main(["simulate", "--out", str(tmp_path), "--drift", "shipping_cost"])


@pytest.mark.realdata
def test_land_events_with_the_bundled_otto_mapping(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    assert (
        main(
            [
                "land-events",
                "--source",
                str(shared_data / "otto_sessions_fixture.csv"),
                "--mapping",
                "otto",
                "--landing",
                str(landing),
            ]
        )
        == 0
    )
    assert "862 lines read (0 empty lines skipped): 862 events" in capsys.readouterr().out
    assert (landing / "2022-07-31" / "events.jsonl").exists()
