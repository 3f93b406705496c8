"""The daily partitions follow the setting or the landed data; a day outside them is named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cartintel_assets.defs.partitions import (
    PartitionRangeError,
    build_daily_partitions,
    first_day,
    require_day,
)


@pytest.fixture()
def landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CARTINTEL_SETTINGS", str(tmp_path / "cartintel.yaml"))
    monkeypatch.setenv("CARTINTEL_LANDING", str(tmp_path / "landing"))
    return tmp_path / "landing"


def test_the_range_starts_at_the_earliest_landed_day(landing: Path) -> None:
    assert first_day() == date(2022, 1, 1)  # nothing landed: the default
    for name in ("2019-10-02", "2019-10-01", "_rejected", "_manifests", "notes"):
        (landing / name).mkdir(parents=True)
    assert first_day() == date(2019, 10, 1)
    (landing.parent / "cartintel.yaml").write_text("partitions:\n  first_day: 2018-05-01\n")
    assert first_day() == date(2018, 5, 1)  # the setting wins


def test_a_day_outside_the_range_is_named_with_the_setting(landing: Path) -> None:
    parts = build_daily_partitions(date(2022, 1, 1))
    assert require_day("2022-01-01", parts) == "2022-01-01"
    with pytest.raises(PartitionRangeError) as err:
        require_day("2019-10-01", parts)
    assert "2019-10-01" in str(err.value) and "partitions.first_day" in str(err.value)
    assert "2022-01-01.." in str(err.value)
    with pytest.raises(PartitionRangeError, match="after tomorrow"):
        require_day("2999-01-01", parts)
    with pytest.raises(PartitionRangeError, match="not a day"):
        require_day("01/10/2019", parts)
    (landing.parent / "cartintel.yaml").write_text("partitions:\n  first_day: someday\n")
    with pytest.raises(ValueError, match="'partitions' is invalid"):
        first_day()


def test_ingest_names_what_it_cannot_ingest(
    landing: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cartintel_assets.cli import main
    from cartintel_assets.ingestion.ingest import landed_folders

    # the storefront's output folder given instead of its landing/: its folders are no days
    for name in ("landing", "truth", "_rejected", "20191001"):
        (landing / name).mkdir(parents=True)
    assert landed_folders(landing) == ([], ["20191001", "landing", "truth"])
    assert main(["ingest", "--landing", str(landing)]) == 2
    out = capsys.readouterr()
    assert "not days (YYYY-MM-DD), not ingested: ['20191001', 'landing', 'truth']" in out.out
    assert "no landed day" in out.err
    # a landed day before the partitions fails up front, naming the day and the setting
    (landing / "2001-01-01").mkdir()
    assert landed_folders(landing)[0] == ["2001-01-01"]
    assert main(["ingest", "--landing", str(landing)]) == 2
    err = capsys.readouterr().err
    assert "day 2001-01-01 is outside the daily partitions" in err
    assert "partitions.first_day" in err
