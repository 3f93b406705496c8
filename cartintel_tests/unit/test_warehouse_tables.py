"""Derived tables outlive the code that created them: a day written by a later version, with a
column the earlier one did not have, lands beside the days written before it."""

from __future__ import annotations

from datetime import date

import duckdb

from cartintel_assets.warehouse.tables import replace_partition


def test_a_partition_with_a_new_column_extends_a_table_written_before_it() -> None:
    con = duckdb.connect()
    old, new = date(2026, 10, 1), date(2026, 10, 2)
    con.execute("CREATE TEMP TABLE _old AS SELECT * FROM (VALUES ('s1', 3), ('s2', 4)) t(id, n)")
    replace_partition(con, "features", "_old", old)
    # the next version computes one more column, in the middle
    con.execute(
        "CREATE TEMP TABLE _new AS SELECT * FROM (VALUES ('s3', 2.5, 5)) t(id, prior_views, n)"
    )
    replace_partition(con, "features", "_new", new)
    rows = con.execute(
        "SELECT id, n, prior_views, partition_date FROM features ORDER BY id"
    ).fetchall()
    assert rows == [("s1", 3, None, old), ("s2", 4, None, old), ("s3", 5, 2.5, new)]
    # and an old-shaped day written again keeps the new column, empty
    replace_partition(con, "features", "_old", new)
    assert con.execute("SELECT count(*), count(prior_views) FROM features").fetchall() == [(4, 0)]
