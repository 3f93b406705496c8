"""The scale benchmark's own measuring and reporting: the memory of a whole process tree, and a
BENCHMARKS.md section rewritten without losing the other sections or the sizes not re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartintel_assets.contracts.schema import TABLES
from cartintel_tests.benchmarks import scale
from cartintel_tests.benchmarks.run import write_report
from cartintel_tests.benchmarks.scale import (
    SECTION,
    run_measured,
    split_section,
    tree_rss,
    write_section,
)

MIB = 2**20


def test_tree_rss_counts_the_children() -> None:
    alone = tree_rss(os.getpid())
    # a child holding 300 MiB (touched, so resident)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(300 * 2**20); time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 20
        while tree_rss(child.pid) < 300 * MIB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_rss(child.pid) >= 300 * MIB
        assert tree_rss(os.getpid()) >= alone + 300 * MIB
    finally:
        child.kill()
        child.wait()


def test_run_measured_reports_the_peak_of_a_grandchild(tmp_path: Path) -> None:
    # the parent stays small; its own child allocates 400 MiB for a second
    code = (
        "import subprocess, sys;"
        " subprocess.run([sys.executable, '-c', 'import time; b = bytearray(400 * 2**20);"
        " time.sleep(1.5)'], check=True); print('{\"done\": 1}')"
    )
    wall, peak, last = run_measured(
        [sys.executable, "-c", code], dict(os.environ), tmp_path / "log", "["
    )
    assert json.loads(last) == {"done": 1}
    assert peak * 2**30 >= 400 * MIB and wall >= 1.5


def _row(size: int, engine: str, peak: float) -> dict[str, Any]:
    return {
        "size": size,
        "engine": engine,
        "sessions": size,
        "events": size * 10,
        "seconds": 1.0,
        "wall_s": size / 1000,
        "daily_s": size / 2000,
        "features_s": size / 20000,
        "labels_s": 1.0,
        "training_s": 2.0,
        "test_roc_auc": 0.85,
        "peak_gib": peak,
        "measured": "2026-01-01 00:00",
        "cpu": "cpu",
    }


def test_the_section_is_replaced_and_other_sizes_are_kept(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Before\n\nkept above\n\n## After\n\nkept below\n")
    write_section(md, [_row(100_000, "duckdb", 1.0), _row(100_000, "spark", 2.0)], "cpu")
    write_section(md, [_row(1_000_000, "duckdb", 3.0)], "cpu")
    noted = {**_row(100_000, "duckdb", 1.5), "note": "measured beside other work"}
    write_section(md, [noted], "cpu")  # a rerun of one size
    text = md.read_text()
    assert "- 0.1M on duckdb: measured beside other work" in text
    assert text.count(SECTION) == 1 and "kept above" in text and "kept below" in text
    assert text.index("## Before") < text.index("## After")
    lines = [line for line in text.splitlines() if line.startswith("| 1")]
    assert [line.split(" | ")[1] for line in lines] == ["duckdb", "spark", "duckdb"]
    assert "**1.5 GiB**" in lines[0] and "**2.0 GiB**" in lines[1] and "**3.0 GiB**" in lines[2]
    # growth between the sizes, and the projected size where the embedded engine needs 24 GiB:
    # 1.5 GiB at 0.1M, 3.0 GiB at 1M: 1.67 GiB per million more, 24 GiB near 13.6M sessions
    assert (
        "0.1M → 1M sessions (×10): time ×10.0 (the `session_features` steps ×10.0),"
        " peak memory ×2.0" in text
    )
    assert "near **14M sessions**" in text
    # what no run has measured yet, per size and engine
    assert "- not measured yet: 1M sessions on spark" in text
    assert "- not measured yet: 5M sessions on duckdb" in text
    assert "- not measured yet: 0.1M" not in text
    # every row measured on the CPU the header names
    assert "on 2 cores (cpu)" in text.replace(f"{os.cpu_count()} cores", "2 cores")
    assert "- measured on" not in text


def test_rows_from_another_machine_name_their_cpu(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    write_section(md, [{**_row(100_000, "duckdb", 1.0), "cpu": "AMD EPYC"}], "AMD EPYC")
    write_section(md, [{**_row(1_000_000, "duckdb", 3.0), "cpu": "Intel Xeon"}], "Intel Xeon")
    text = md.read_text()
    assert "(each row's CPU: the notes below)" in text and "(Intel Xeon)" not in text
    assert "- measured on AMD EPYC: 0.1M on duckdb" in text
    assert "- measured on Intel Xeon: 1M on duckdb" in text
    # times of two CPUs are not compared; memory is
    assert (
        "duckdb, 0.1M → 1M sessions (×10): time not compared (measured on different CPUs),"
        " peak memory ×3.0" in text
    )


def test_make_bench_keeps_the_scale_section(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Serving\n\nold figures\n")
    write_section(md, [_row(100_000, "duckdb", 1.0)], "cpu")
    scale = split_section(md.read_text(), SECTION)[1]
    assert "**1.0 GiB**" in scale and "old figures" not in scale
    write_report(md, ["# Benchmarks", "", "## Serving", "", "new figures"])
    text = md.read_text()
    assert "new figures" in text and "old figures" not in text
    assert split_section(text, SECTION)[1] == scale and text.endswith(scale)


def test_a_shop_simulated_in_parts_lands_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 parts of the customer base over the same 6 days: each part's simulation numbers its
    # customers, sessions, events, reviews and assignments from 0, and ingestion would
    # quarantine the second part's as duplicates
    monkeypatch.setattr(scale, "DAYS", 6)
    monkeypatch.setattr(scale, "BLOCK_SESSIONS", 6 * 1000)
    scale.land(2 * 6 * 1000, tmp_path)
    days = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert len(days) == 6 and not (tmp_path / "parts").exists()
    con = duckdb.connect()

    def read(table: str, day: str | None = None) -> str:
        spec = next(t for t in TABLES if t.name == table)
        files = [
            str(tmp_path / "landing" / d / spec.landing_file) for d in ([day] if day else days)
        ]
        fn = "read_parquet" if spec.landing_format == "parquet" else "read_json_auto"
        return f"{fn}({files})"

    for spec in TABLES:  # keys unique where ingestion wants them unique
        for scope in [None] if spec.key_unique_across_partitions else days:
            keys = ", ".join(spec.key)
            rows, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({keys})) FROM {read(spec.name, scope)}"
            ).fetchall()[0]
            assert rows == distinct, (spec.name, scope)
    # every day holds both parts' customers and sessions, and the catalogue once
    for day in days:
        parts = con.execute(
            f"SELECT count(DISTINCT left(session_id, 2)), count(DISTINCT left(customer_id, 2))"
            f" FROM {read('sessions', day)}"
        ).fetchall()[0]
        assert parts == (2, 2), day
        assert con.execute(f"SELECT count(*) FROM {read('products', day)}").fetchall()[0][0] == 5000
    # references into the prefixed ids still resolve
    orphans = con.execute(
        f"SELECT (SELECT count(*) FROM {read('events')} ANTI JOIN {read('sessions')}"
        f" USING (session_id)), (SELECT count(*) FROM {read('sessions')}"
        f" ANTI JOIN {read('customers')} USING (customer_id))"
    ).fetchall()[0]
    assert orphans == (0, 0)


def test_a_kept_storefront_is_landed_once_and_a_cut_short_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed: list[int] = []

    def land(sessions: int, out: Path) -> dict[str, Any]:
        assert not (out / "landing").exists(), "a landing cut short is cleared first"
        (out / "landing").mkdir()
        landed.append(sessions)
        return {"sessions": sessions, "events": 10 * sessions, "seconds": 1.5}

    monkeypatch.setattr(scale, "land", land)
    with scale._size_dir(tmp_path, 1000) as folder:
        assert folder == (tmp_path / "1000").resolve()
        (folder / "landing").mkdir()  # what a run stopped mid-simulation leaves
        first = scale._storefront(1000, folder)
    with scale._size_dir(tmp_path, 1000) as folder:
        again = scale._storefront(1000, folder)
    assert landed == [1000] and again == first == {
        "sessions": 1000,
        "events": 10000,
        "seconds": 1.5,
    }
    assert (tmp_path / "1000" / "landing").is_dir()  # kept after the run
    with scale._size_dir(None, 1000) as temporary:
        assert temporary.is_dir() and tmp_path not in temporary.parents
    assert not temporary.exists()


def test_spark_alone_needs_the_embedded_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "1000").mkdir()
    (tmp_path / "1000" / "storefront.json").write_text(json.dumps({"sessions": 1000}))
    with pytest.raises(SystemExit, match="run the engines duckdb,spark together"):
        scale.main(
            [
                "--sizes",
                "1000",
                "--engines",
                "spark",
                "--workdir",
                str(tmp_path),
                "--out",
                str(tmp_path / "BENCHMARKS.md"),
            ]
        )
