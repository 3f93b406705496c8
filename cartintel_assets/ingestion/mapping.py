"""Bring your own event log: map a foreign CSV onto the canonical landing schema, through DuckDB.

A mapping file (YAML) names, for each canonical column, the foreign column (or a list of them:
the first non-empty wins), the time format and the event-type names. The mapping is checked
against the file before anything is written (unknown canonical names, absent foreign columns,
a time format no sampled value parses), with errors that name the column.

The log is streamed by DuckDB (no whole-file read into Python): every line ends up in exactly
one place, and `<landing>/_manifests/<name>.json` says where:
- an event in its session's day folder (`<landing>/<YYYY-MM-DD>/events.jsonl`), with the
  sessions, new customers and products (category, brand, that day's price) of the day. The
  shop's own session id is kept when mapped; otherwise a customer's events are cut into
  sessions at `sessionise.inactivity_minutes` of inactivity. Missing quantity means one unit.
  The event id is a hash of the line's content, so an exact duplicate line gets the same id and
  ingestion quarantines it as a duplicate. Values that do not parse are landed as they are:
  ingestion quarantines them with a reason;
- a line that cannot be placed on a day in `<landing>/_rejected/<name>.jsonl`, with the reason:
  not a CSV record of the header's shape, no readable time, no customer, a time in the future
  or before the first partition (when `partitions.first_day` is set), another currency.
Empty lines are not records; they are counted, not landed. No Dagster import.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from cartintel_assets.contracts.schema import EVENT_TYPES, TABLES_BY_NAME
from cartintel_assets.warehouse.tables import has_table

# Canonical columns a mapping may name (every one but the three required is optional).
REQUIRED = ("customer_id", "ts", "event_type")
EVENT_COLUMNS: tuple[str, ...] = ("product_id", "quantity", "price", "shipping_cost")
EVENT_COLUMNS += ("delivery_days", "coupon_code", "order_value")
CANONICAL = (*REQUIRED, *EVENT_COLUMNS, "session_id", "category", "brand", "currency")
DEFAULTS = ("region", "device", "traffic_source", "category", "marketing_consent", "currency")
TIME_FORMATS = "epoch_ms | epoch_s | iso | a strftime pattern such as '%Y-%m-%d %H:%M:%S UTC'"
CLOCK_SKEW = timedelta(minutes=1)
SAMPLE_ROWS = 1000


class MappingError(ValueError):
    """A mapping that does not fit the canonical schema or the file it is meant for."""


@dataclass(frozen=True)
class EventLogMapping:
    """How a foreign event log's columns, times and event names map to the canonical schema."""

    name: str
    columns: dict[str, tuple[str, ...]]
    time_format: str
    event_types: dict[str, str]
    inactivity_minutes: float = 30.0
    defaults: dict[str, Any] = field(default_factory=dict)
    delimiter: str = ","

    @classmethod
    def from_yaml(cls, path: Path | str) -> EventLogMapping:
        doc = yaml.safe_load(Path(path).read_text())
        if not isinstance(doc, dict):
            raise MappingError(f"mapping {path}: expected a YAML mapping")
        missing = {"name", "columns", "time_format", "event_types"} - set(doc)
        if missing:
            raise MappingError(f"mapping {path} lacks {sorted(missing)}")
        columns = {
            str(k): tuple(str(c) for c in (v if isinstance(v, list) else [v]))
            for k, v in (doc["columns"] or {}).items()
        }
        unknown = sorted(set(columns) - set(CANONICAL))
        if unknown:
            raise MappingError(
                f"mapping {path}: unknown canonical column(s) {unknown}; known: {list(CANONICAL)}"
            )
        need = sorted(set(REQUIRED) - set(columns))
        if need:
            raise MappingError(f"mapping {path}: columns must map {need}")
        types = {str(k): str(v) for k, v in (doc["event_types"] or {}).items()}
        bad = sorted({v for v in types.values() if v not in EVENT_TYPES})
        if bad:
            raise MappingError(
                f"mapping {path}: event_types map to {bad}, not canonical event types"
                f" {list(EVENT_TYPES)}"
            )
        defaults = dict(doc.get("defaults") or {})
        unknown = sorted(set(defaults) - set(DEFAULTS))
        if unknown:
            raise MappingError(f"mapping {path}: unknown defaults {unknown}; known: {DEFAULTS}")
        if "currency" in columns and "currency" not in defaults:
            raise MappingError(
                f"mapping {path}: a mapped currency column needs defaults.currency, the shop's"
                " currency (lines in another currency are rejected: no conversion rates)"
            )
        return cls(
            name=str(doc["name"]),
            columns=columns,
            time_format=str(doc["time_format"]),
            event_types=types,
            inactivity_minutes=float((doc.get("sessionise") or {}).get("inactivity_minutes", 30)),
            defaults=defaults,
            delimiter=str(doc.get("delimiter", ",")),
        )

    def foreign_columns(self) -> list[str]:
        return sorted({c for cols in self.columns.values() for c in cols})


@dataclass
class LandingSummary:
    """What a foreign log became; `lines` is counted from the file's bytes, independently of the
    CSV reader, and `lines == events_landed + rows_rejected` unless a record spans lines."""

    source: str
    mapping: str
    lines: int
    empty_lines: int
    events_landed: int
    rows_rejected: int
    rejected_by_reason: dict[str, int]
    sessions: int
    days: dict[str, int]
    landed_at: str

    @property
    def accounted(self) -> bool:
        return self.lines == self.events_landed + self.rows_rejected


def count_lines(path: Path) -> tuple[int, int]:
    """(non-empty lines after the header, empty lines), read from the bytes alone."""
    import numpy as np

    lines = empty = 0
    prev = False  # the first line is the header
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            nl = np.frombuffer(chunk.replace(b"\r", b""), np.uint8) == 10
            if not len(nl):
                continue
            lines += int(nl.sum())
            # an empty line: a newline right after a newline (or the previous chunk's last one)
            empty += int(np.count_nonzero(nl[1:] & nl[:-1])) + int(prev and nl[0])
            prev, last = bool(nl[-1]), chunk[-1:]
    if last not in (b"\n", b""):
        lines += 1  # a last line without its newline
    return max(lines - 1 - empty, 0), empty  # the header is not a record


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _s(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _value(mapping: EventLogMapping, canon: str) -> str:
    """SQL of a canonical column: its foreign column(s), empty strings as NULL."""
    cols = [f"NULLIF(trim({_q(c)}), '')" for c in mapping.columns[canon]]
    return cols[0] if len(cols) == 1 else f"coalesce({', '.join(cols)})"


def time_sql(expr: str, time_format: str) -> str:
    """SQL parsing foreign times to naive UTC (NULL where unreadable); the session is in UTC."""
    if time_format == "epoch_ms":
        return f"make_timestamp(CAST(TRY_CAST({expr} AS DOUBLE) * 1000 AS BIGINT))"
    if time_format == "epoch_s":
        return f"make_timestamp(CAST(TRY_CAST({expr} AS DOUBLE) * 1000000 AS BIGINT))"
    if time_format == "iso":
        return f"CAST(TRY_CAST({expr} AS TIMESTAMPTZ) AS TIMESTAMP)"
    return f"CAST(try_strptime({expr}, {_s(time_format)}) AS TIMESTAMP)"


def _connect(work: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(work / "landing.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = {_s(str(work / 'spill'))}")
    con.execute(
        f"SET memory_limit = '{os.environ.get('CARTINTEL_LANDING_MEMORY', '2GB')}'"
    )  # spills beyond it
    con.execute("SET preserve_insertion_order = false")
    return con


def csv_header(source: Path, delimiter: str) -> list[str]:
    import csv

    with open(source, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    return next(csv.reader([first], delimiter=delimiter), [])


def validate(
    mapping: EventLogMapping, source: Path, con: duckdb.DuckDBPyConnection | None = None
) -> list[str]:
    """Check the mapping against the file before landing: every foreign column is in the header
    and the time format reads the sampled times. Returns the header; raises `MappingError`."""
    header = csv_header(source, mapping.delimiter)
    absent = [c for c in mapping.foreign_columns() if c not in header]
    if absent:
        raise MappingError(
            f"{source}: column(s) {absent} named in mapping {mapping.name!r} are not in the"
            f" file's header {header}"
        )
    own = con is None
    con = con or duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        ts = _value(mapping, "ts")
        sample = con.execute(
            f"SELECT count({ts}), count({time_sql(ts, mapping.time_format)}), any_value({ts})"
            f" FROM (SELECT * FROM {csv_reader_sql(source, header, mapping.delimiter, False)}"
            f" LIMIT {SAMPLE_ROWS})"
        ).fetchall()[0]
    finally:
        if own:
            con.close()
    if sample[0] and not sample[1]:
        raise MappingError(
            f"{source}: time_format {mapping.time_format!r} of mapping {mapping.name!r} reads none"
            f" of the first {sample[0]} values of column {list(mapping.columns['ts'])}, e.g."
            f" {sample[2]!r} (formats: {TIME_FORMATS})"
        )
    return header


def csv_reader_sql(source: Path, header: list[str], delimiter: str, rejects: bool) -> str:
    cols = "{" + ", ".join(f"{_s(h)}: 'VARCHAR'" for h in header) + "}"
    keep = (
        ", store_rejects = true, rejects_table = '_csv_rejects', rejects_scan = '_csv_scan'"
        if rejects
        else ", ignore_errors = true"
    )
    return (
        f"read_csv({_s(str(source))}, header = true, columns = {cols}, auto_detect = false,"
        f" delim = {_s(delimiter)}, quote = '\"', escape = '\"', strict_mode = true{keep})"
    )


def land_foreign_log(
    source: Path | str,
    mapping: EventLogMapping,
    landing_dir: Path | str,
    *,
    first_day: date | None = None,
    now: datetime | None = None,
    say: Callable[[str], None] | None = None,
) -> LandingSummary:
    """Convert a foreign CSV event log into canonical landing files, one folder per day, and
    write the line accounting to `<landing>/_manifests/<mapping name>.json`."""
    source, landing = Path(source).resolve(), Path(landing_dir)
    say = say or (lambda _msg: None)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    landing.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"_landing-{mapping.name}-", dir=landing))
    try:
        con = _connect(work)
        header = validate(mapping, source, con)
        say(f"counting the lines of {source.name}")
        lines, empty = count_lines(source)
        say(f"{lines:,} lines ({empty:,} empty): reading them through DuckDB")
        _stage(con, mapping, source, header, first_day, now)
        rejected = _write_rejects(con, landing, mapping)
        say(f"{sum(rejected.values()):,} lines rejected with a reason: {rejected}")
        days = _sessionise(con, mapping)
        say(f"{sum(days.values()):,} events over {len(days)} days: writing the day folders")
        sessions = _write_days(con, work, landing, mapping, days, say)
        con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = LandingSummary(
        source=str(source),
        mapping=mapping.name,
        lines=lines,
        empty_lines=empty,
        events_landed=sum(days.values()),
        rows_rejected=sum(rejected.values()),
        rejected_by_reason=rejected,
        sessions=sessions,
        days=days,
        landed_at=f"{now:%Y-%m-%d %H:%M:%S}",
    )
    manifest = manifest_path(landing, mapping.name)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(asdict(summary), indent=1) + "\n")
    return summary


def manifest_path(landing: Path, name: str) -> Path:
    return landing / "_manifests" / f"{name}.json"


def rejects_path(landing: Path, name: str) -> Path:
    return landing / "_rejected" / f"{name}.jsonl"


def _stage(
    con: duckdb.DuckDBPyConnection,
    mapping: EventLogMapping,
    source: Path,
    header: list[str],
    first_day: date | None,
    now: datetime,
) -> None:
    """`_src`: every CSV record with its canonical values, content hash and rejection reason."""
    m = mapping
    ts_text = _value(m, "ts")
    limit = now + CLOCK_SKEW
    raw = "json_object(" + ", ".join(f"{_s(h)}, {_q(h)}" for h in header) + ")"
    # the line's content (a NULL field marked apart from an empty one): an exact duplicate line
    # gets the same hash, so the same event id
    line = "concat_ws(chr(31), " + ", ".join(f"coalesce({_q(h)}, chr(30))" for h in header) + ")"
    reasons = [
        (f"{ts_text} IS NULL", "'no time'"),
        ("_t IS NULL", f"'no readable time: ' || {ts_text} || ' is not {m.time_format}'"),
        (f"{_value(m, 'customer_id')} IS NULL", "'no customer id'"),
        (
            f"_t > TIMESTAMP '{limit:%Y-%m-%d %H:%M:%S}'",
            f"'future timestamp: ' || {ts_text} || ' is after the landing time {limit:%Y-%m-%d %H:%M:%S} UTC'",
        ),
    ]
    if first_day is not None:
        reasons.append(
            (
                f"_t < DATE '{first_day.isoformat()}'",
                f"'out of range: ' || {ts_text} || ' is before partitions.first_day {first_day}'",
            )
        )
    if "currency" in m.columns:
        shop = str(m.defaults["currency"])
        reasons.append(
            (
                f"coalesce({_value(m, 'currency')}, {_s(shop)}) <> {_s(shop)}",
                f"'currency ' || {_value(m, 'currency')} || ' is not the shop''s currency {shop} (no conversion rates)'",
            )
        )
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in reasons) + " END"
    optional = [c for c in CANONICAL if c in m.columns and c not in REQUIRED and c != "currency"]
    event_type = _value(m, "event_type")
    renamed = " ".join(f"WHEN {_s(k)} THEN {_s(v)}" for k, v in m.event_types.items())
    con.execute(
        "CREATE TABLE _src AS SELECT"
        f" {_value(m, 'customer_id')} AS customer_id, _t AS ts,"
        f" CASE {event_type} {renamed} ELSE {event_type} END AS event_type,"
        + "".join(f" {_value(m, c)} AS {_q(c)}," for c in optional)
        + f" md5({line}) AS _hash, _reason,"
        f" CASE WHEN _reason IS NOT NULL THEN CAST({raw} AS VARCHAR) END AS _raw"
        f" FROM (SELECT *, {reason} AS _reason FROM (SELECT *,"
        f" {time_sql(ts_text, m.time_format)} AS _t FROM {csv_reader_sql(source, header, m.delimiter, True)}))"
    )


def _write_rejects(
    con: duckdb.DuckDBPyConnection, landing: Path, mapping: EventLogMapping
) -> dict[str, int]:
    """Write the lines that cannot be placed on a day, with reasons; return lines per reason."""
    con.execute(
        "CREATE TABLE _rejects AS"
        " SELECT regexp_extract(_reason, '^[^:]*') AS kind, _reason AS reason, _raw AS record,"
        " NULL::BIGINT AS line, 1 AS lines FROM _src WHERE _reason IS NOT NULL"
        " UNION ALL"
        # one row per error and column in DuckDB's rejects: one per line here. A record whose
        # unterminated quote ran over several lines counts them all.
        " SELECT 'malformed CSV line', 'malformed CSV line: line ' || line || ', ' || error_type"
        " || ' (' || any_value(error_message) || ')', any_value(csv_line), line,"
        " greatest(1, len(rtrim(any_value(csv_line), chr(10))) - len(replace(rtrim("
        "any_value(csv_line), chr(10)), chr(10), '')) + 1)"
        " FROM (SELECT DISTINCT ON (line) * FROM _csv_rejects ORDER BY line, error_type)"
        " GROUP BY line, error_type"
    )
    out = rejects_path(landing, mapping.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT reason, line, lines, record FROM _rejects ORDER BY line NULLS LAST, record)"
        f" TO {_s(str(out))} (FORMAT JSON)"
    )
    return {
        k: int(n)
        for k, n in con.execute(
            "SELECT kind, sum(lines) FROM _rejects GROUP BY 1 ORDER BY 1"
        ).fetchall()
    }


def _sessionise(con: duckdb.DuckDBPyConnection, mapping: EventLogMapping) -> dict[str, int]:
    """`_ev`: the placeable events with session, position and day; returns events per day."""
    gap = int(mapping.inactivity_minutes * 60)
    prefix = _s(f"{mapping.name}-")
    own = "session_id" in mapping.columns
    # the shop's session id where mapped and present; otherwise a customer's events are cut at
    # `gap` seconds of inactivity, the session named by its customer and start
    cut = (
        " SELECT * EXCLUDE (_prev, _start), "
        f"{prefix} || customer_id || '-' || CAST(epoch(first_value(ts) OVER (PARTITION BY"
        " customer_id, _start ORDER BY ts, _hash)) AS BIGINT) AS _session"
        " FROM (SELECT *, sum(CASE WHEN _prev IS NULL OR epoch(ts) - epoch(_prev) >"
        f" {gap} THEN 1 ELSE 0 END) OVER (PARTITION BY customer_id ORDER BY ts, _hash ROWS"
        " UNBOUNDED PRECEDING) AS _start FROM (SELECT *, lag(ts) OVER (PARTITION BY"
        " customer_id ORDER BY ts, _hash) AS _prev FROM placed"
        + (" WHERE session_id IS NULL" if own else "")
        + "))"
    )
    sessions = (
        f"SELECT *, session_id AS _session FROM placed WHERE session_id IS NOT NULL UNION ALL BY NAME {cut}"
        if own
        else cut
    )
    con.execute(
        "CREATE TABLE _ev AS WITH placed AS ("
        " SELECT * EXCLUDE (_reason, _raw) FROM _src WHERE _reason IS NULL),"
        f" sessioned AS ({sessions})"
        f" SELECT * EXCLUDE (_session{', session_id' if own else ''}), _session AS session_id,"
        " CAST(row_number() OVER (PARTITION BY _session ORDER BY ts, _hash) - 1 AS INTEGER) AS seq,"
        " CAST(min(ts) OVER (PARTITION BY _session) AS DATE) AS _day FROM sessioned"
        # clustered by day, so each day's rows are read alone when its folder is written
        " ORDER BY _day"
    )
    return {
        str(d): int(n)
        for d, n in con.execute("SELECT _day, count(*) FROM _ev GROUP BY 1 ORDER BY 1").fetchall()
    }


def _write_days(
    con: duckdb.DuckDBPyConnection,
    work: Path,
    landing: Path,
    mapping: EventLogMapping,
    days: dict[str, int],
    say: Callable[[str], None],
) -> int:
    """Write each day's events, sessions, new customers and products; return the sessions."""
    d = mapping.defaults
    present = {c[0] for c in con.execute("SELECT * FROM _ev LIMIT 0").description}
    quantity = "coalesce(quantity, '1')" if "quantity" in present else "'1'"
    fields = [
        f"{_s(mapping.name)} || '-' || _hash AS event_id",
        "session_id",
        "seq",
        "strftime(ts, '%Y-%m-%dT%H:%M:%S.%g') AS ts",
        "event_type",
        f"{quantity} AS quantity",
        *(f"{_q(c)}" for c in EVENT_COLUMNS if c in present and c != "quantity"),
    ]
    con.execute(
        "CREATE TABLE _sessions AS SELECT session_id, arg_min(customer_id, ts) AS customer_id,"
        " min(ts) AS started_at, any_value(_day) AS _day FROM _ev GROUP BY 1"
    )
    con.execute(
        "CREATE TABLE _new_customers AS SELECT customer_id, min(_day) AS _day FROM _ev GROUP BY 1"
    )
    category = "category" if "category" in present else "NULL"
    brand = "brand" if "brand" in present else "NULL"
    price = "price" if "price" in present else "NULL"
    con.execute(
        "CREATE TABLE _products AS SELECT _day, product_id,"
        f" coalesce(any_value({category}), {_s(str(d.get('category', 'unknown')))}) AS category,"
        f" any_value({brand}) AS brand,"
        f" TRY_CAST(arg_max({price}, ts) FILTER (WHERE TRY_CAST({price} AS DOUBLE) >= 0) AS DOUBLE) AS price"
        " FROM _ev WHERE product_id IS NOT NULL GROUP BY ALL"
    )
    region = _s(str(d.get("region", "unknown")))
    device = _s(str(d.get("device", "unknown")))
    source = _s(str(d.get("traffic_source", "unknown")))
    consent = "true" if d.get("marketing_consent", False) else "false"
    # the events day by day (a partitioned write in one pass ran out of memory at 40M events);
    # `_ev` is clustered by day, so each COPY reads its day's rows only
    events = TABLES_BY_NAME["events"]
    for i, day in enumerate(days, 1):
        folder = landing / day
        folder.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT {', '.join(fields)} FROM _ev WHERE _day = DATE '{day}')"
            f" TO {_s(str(folder / events.landing_file))} (FORMAT JSON)"
        )
        if i % 7 == 0 or i == len(days):
            say(f"events of {i}/{len(days)} days written")
    # the small Parquet tables in one partitioned pass each, with one writer thread so each day
    # gets one file (Parquet files cannot be appended to one another)
    parquet = {
        "sessions": f"SELECT session_id, customer_id, started_at, {device} AS device,"
        f" {source} AS traffic_source, {region} AS region, _day FROM _sessions",
        "customers": f"SELECT customer_id, {region} AS region, _day AS signup_date,"
        f" {consent} AS marketing_consent, {device} AS preferred_device, _day FROM _new_customers",
        "products": "SELECT product_id, category, brand, CAST(NULL AS DOUBLE) AS list_price,"
        " price, CAST(NULL AS BOOLEAN) AS on_promotion, CAST(NULL AS VARCHAR) AS weight_class,"
        " _day FROM _products",
    }
    con.execute("SET threads = 1")
    for table, query in parquet.items():
        target = TABLES_BY_NAME[table].landing_file
        con.execute(
            f"COPY ({query}) TO {_s(str(work / table))} (FORMAT PARQUET, PARTITION_BY (_day))"
        )
        for day in days:
            written = list((work / table / f"_day={day}").glob("*.parquet"))
            if len(written) > 1:
                raise RuntimeError(f"{table} {day}: {len(written)} Parquet files, expected one")
            if written:
                os.replace(written[0], landing / day / target)
            else:  # a day without new customers: an empty file
                con.execute(
                    f"COPY (SELECT * EXCLUDE (_day) FROM ({query}) LIMIT 0)"
                    f" TO {_s(str(landing / day / target))} (FORMAT PARQUET)"
                )
        say(f"{table} written to {len(days)} day folders")
    return int(con.execute("SELECT count(*) FROM _sessions").fetchall()[0][0])


@dataclass
class SourceAccount:
    """One landed log's lines against what the warehouse holds of it."""

    source: str
    mapping: str
    lines: int
    accepted: int
    quarantined: int
    rejected: int
    not_ingested: list[str]
    erased: int = 0  # lines an erasure removed that the counts above no longer include

    @property
    def accounted(self) -> bool:
        return not self.not_ingested and self.lines == (
            self.accepted + self.quarantined + self.rejected + self.erased
        )


def record_erasure(landing: Path, erased: dict[str, int], erasure_id: str, at: str) -> None:
    """Note in each landed log's manifest the lines an erasure removed (`erased`: lines per file
    under `landing`) from its days' events files and its rejects file, so that its accounting
    still adds up: a rejected line counts from then on, an event line once its day is ingested
    again (until then the ingestion log still counts it)."""
    events_file = TABLES_BY_NAME["events"].landing_file
    for manifest in sorted((landing / "_manifests").glob("*.json")):
        m = json.loads(manifest.read_text())
        events = {
            d: erased[f"{d}/{events_file}"] for d in m["days"] if f"{d}/{events_file}" in erased
        }
        rejects = str(rejects_path(landing, m["mapping"]).relative_to(landing))
        if not events and rejects not in erased:
            continue
        m.setdefault("erased", []).append(
            {
                "erasure_id": erasure_id,
                "at": at,
                "events": events,
                "rejected": erased.get(rejects, 0),
            }
        )
        tmp = manifest.with_name(f".{manifest.name}.erasing")
        tmp.write_text(json.dumps(m, indent=1) + "\n")
        os.replace(tmp, manifest)


def account_sources(con: duckdb.DuckDBPyConnection, landing: Path) -> list[SourceAccount]:
    """For each log landed in `landing` (its manifest): lines of the source = events accepted +
    quarantined by ingestion (`ingestion_log` of its days) + lines rejected at landing (counted
    from the rejects file, not the manifest)."""
    out = []
    for manifest in sorted((landing / "_manifests").glob("*.json")):
        m = json.loads(manifest.read_text())
        days = sorted(m["days"])
        logged = (
            {
                str(d): (int(a), int(q), at)
                for d, a, q, at in con.execute(
                    "SELECT partition_date, accepted, quarantined, ingested_at FROM ingestion_log"
                    " WHERE table_name = 'events' AND list_contains($days, CAST(partition_date AS VARCHAR))",
                    {"days": days},
                ).fetchall()
            }
            if has_table(con, "ingestion_log")
            else {}
        )
        rejects = rejects_path(landing, m["mapping"])
        rejected = 0
        if rejects.exists():
            with open(rejects, encoding="utf-8") as fh:
                rejected = sum(int(json.loads(ln).get("lines", 1)) for ln in fh if ln.strip())
        erased = 0
        for e in m.get("erased", []):
            erased += int(e["rejected"])
            erased_at = datetime.fromisoformat(e["at"]).astimezone(UTC).replace(tzinfo=None)
            for day, n in e["events"].items():
                if day in logged and logged[day][2] > erased_at:  # ingested again since
                    erased += int(n)
        out.append(
            SourceAccount(
                source=m["source"],
                mapping=m["mapping"],
                lines=int(m["lines"]),
                accepted=sum(a for a, _, _ in logged.values()),
                quarantined=sum(q for _, q, _ in logged.values()),
                rejected=rejected,
                not_ingested=[d for d in days if d not in logged],
                erased=erased,
            )
        )
    return out
