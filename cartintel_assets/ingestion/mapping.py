"""Bring your own event log: map a foreign CSV onto the canonical landing schema.

A mapping file (YAML) names the foreign columns, the time format and the event-type names. The
log is re-sessionised by an inactivity gap and landed as canonical files, one folder per day, so
the ordinary ingestion assets validate it. Values that cannot be mapped are landed as they are
(ingestion quarantines them with a reason); rows that cannot be placed on a day at all (no
readable time or no customer) are written to `<landing>/_rejected/<name>.jsonl` with the reason.
No Dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cartintel_assets.contracts.schema import TABLES_BY_NAME


@dataclass(frozen=True)
class EventLogMapping:
    """How a foreign event log's columns, times and event names map to the canonical schema."""

    name: str
    columns: dict[str, str]
    time_format: str
    event_types: dict[str, str]
    inactivity_minutes: float = 30.0
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: Path | str) -> EventLogMapping:
        doc = yaml.safe_load(Path(path).read_text())
        missing = {"name", "columns", "time_format", "event_types"} - set(doc)
        if missing:
            raise ValueError(f"mapping {path} lacks {sorted(missing)}")
        need = {"customer_id", "ts", "event_type"} - set(doc["columns"])
        if need:
            raise ValueError(f"mapping {path}: columns must map {sorted(need)}")
        return cls(
            name=str(doc["name"]),
            columns={str(k): str(v) for k, v in doc["columns"].items()},
            time_format=str(doc["time_format"]),
            event_types={str(k): str(v) for k, v in doc["event_types"].items()},
            inactivity_minutes=float(doc.get("sessionise", {}).get("inactivity_minutes", 30)),
            defaults=dict(doc.get("defaults") or {}),
        )


@dataclass
class LandingSummary:
    """What a foreign log became: rows read, events landed, rows rejected, sessions and days."""

    rows_read: int
    events_landed: int
    rows_rejected: int
    sessions: int
    days: list[str]


def parse_times(values: pd.Series, time_format: str) -> pd.Series:
    """Parse foreign times to naive UTC; unreadable values become NaT."""
    if time_format in ("epoch_ms", "epoch_s"):
        num = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(num, unit="ms" if time_format == "epoch_ms" else "s", errors="coerce")
    if time_format == "iso":
        ts = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    else:
        ts = pd.to_datetime(values, errors="coerce", utc=True, format=time_format)
    return ts.dt.tz_convert(None)


def sessionise(
    customer: pd.Series, ts: pd.Series, gap_minutes: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each customer's time-ordered events into sessions at gaps longer than `gap_minutes`.

    Returns (session number per row, position within the session), aligned with the input,
    whose rows must already be sorted by customer then time.
    """
    same = customer.eq(customer.shift())
    gap = ts.diff().dt.total_seconds().div(60.0)
    new = (~same) | (gap > gap_minutes)
    sess = new.cumsum().to_numpy() - 1
    counts = np.bincount(sess)
    seq = np.arange(len(sess)) - np.repeat(np.cumsum(counts) - counts, counts)
    return sess, seq


def land_foreign_log(
    source: Path | str, mapping: EventLogMapping, landing_dir: Path | str
) -> LandingSummary:
    """Convert a foreign CSV event log into canonical landing files, one folder per day."""
    landing = Path(landing_dir)
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    absent = [v for v in mapping.columns.values() if v not in raw.columns]
    if absent:
        raise ValueError(
            f"{source}: columns {absent} named in mapping {mapping.name!r} are not in the file"
        )
    df = pd.DataFrame({canon: raw[foreign] for canon, foreign in mapping.columns.items()})
    df["_line"] = np.arange(1, len(df) + 1)
    df["_ts"] = parse_times(df["ts"], mapping.time_format)
    placeable = df["_ts"].notna() & df["customer_id"].ne("")
    rejected = df[~placeable]
    if len(rejected):
        out = landing / "_rejected"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{mapping.name}.jsonl", "w", encoding="utf-8") as fh:
            for rec in raw.loc[rejected.index].to_dict(orient="records"):
                reason = (
                    "no readable time"
                    if pd.isna(
                        parse_times(
                            pd.Series([rec[mapping.columns["ts"]]]), mapping.time_format
                        ).iat[0]
                    )
                    else "no customer id"
                )
                fh.write(json.dumps({"reason": reason, "record": rec}) + "\n")
    df = (
        df[placeable]
        .sort_values(["customer_id", "_ts", "_line"], kind="stable")
        .reset_index(drop=True)
    )
    sess, seq = sessionise(df["customer_id"], df["_ts"], mapping.inactivity_minutes)
    df["session_id"] = [
        f"{mapping.name}-{c}-{s}" for c, s in zip(df["customer_id"], sess, strict=True)
    ]
    df["seq"] = seq
    df["event_id"] = df["session_id"] + "-" + df["seq"].astype(str)
    df["event_type"] = df["event_type"].map(lambda v: mapping.event_types.get(v, v))
    start = df.groupby("session_id")["_ts"].transform("min")
    df["_day"] = start.dt.strftime("%Y-%m-%d")
    d = mapping.defaults
    events_spec = TABLES_BY_NAME["events"]
    days = sorted(df["_day"].unique())
    first_seen = df.groupby("customer_id")["_day"].transform("min")
    for day in days:
        part = df[df["_day"] == day]
        folder = landing / day
        folder.mkdir(parents=True, exist_ok=True)
        ev = pd.DataFrame({c.name: part.get(c.name) for c in events_spec.columns})
        ev["ts"] = part["_ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3]
        ev.to_json(folder / events_spec.landing_file, orient="records", lines=True)
        sess_rows = (
            part.groupby("session_id", sort=True)
            .agg(customer_id=("customer_id", "first"), started_at=("_ts", "min"))
            .reset_index()
        )
        sess_rows = sess_rows.assign(
            device=d.get("device", "unknown"),
            traffic_source=d.get("traffic_source", "unknown"),
            region=d.get("region", "unknown"),
        )
        sess_rows.to_parquet(folder / TABLES_BY_NAME["sessions"].landing_file, index=False)
        new_customers = part.loc[first_seen.loc[part.index] == day, "customer_id"].unique()
        pd.DataFrame(
            {
                "customer_id": new_customers,
                "region": d.get("region", "unknown"),
                "signup_date": pd.to_datetime(day).date(),
                "marketing_consent": bool(d.get("marketing_consent", False)),
                "preferred_device": d.get("device", "unknown"),
            }
        ).to_parquet(folder / TABLES_BY_NAME["customers"].landing_file, index=False)
        products = (
            part.loc[
                part.get("product_id", pd.Series(dtype=str)).fillna("").ne(""), "product_id"
            ].unique()
            if "product_id" in part
            else []
        )
        pd.DataFrame(
            {
                "product_id": pd.Series(products, dtype=str),
                "category": d.get("category", "unknown"),
                "list_price": pd.Series([None] * len(products), dtype="float64"),
                "price": pd.Series([None] * len(products), dtype="float64"),
                "on_promotion": pd.Series([None] * len(products), dtype="boolean"),
                "weight_class": pd.Series([None] * len(products), dtype="string"),
            }
        ).to_parquet(folder / TABLES_BY_NAME["products"].landing_file, index=False)
    return LandingSummary(
        rows_read=len(raw),
        events_landed=len(df),
        rows_rejected=len(rejected),
        sessions=int(sess.max() + 1) if len(sess) else 0,
        days=days,
    )
