"""Consent withdrawals take effect in the scoring service as soon as the customers feed lands,
before the day's ingestion: the service's companion process reads the landed customers files of
days the warehouse has not ingested yet, pseudonymised with the ingestion key. A withdrawal
(`marketing_consent` false) counts at once: stopping contact is always safe. A grant waits for
ingestion, which validates it (a malformed line is quarantined, not obeyed)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from cartintel_assets.contracts.schema import CUSTOMERS
from cartintel_assets.ingestion.ingest import landed_folders, pseudonymise

# pseudonymous customer -> (landed day, consent as landed)
LandedConsent = dict[str, tuple[str, bool]]


def landed_consent(
    landing: Path, key: str, after: date | None, seen: dict[Path, int]
) -> LandedConsent:
    """The consent in customers files landed for days after `after` (the warehouse's latest
    ingested customers day), latest day per customer, from the files that are new or changed
    since `seen` (path -> mtime in ns, updated here)."""
    out: LandedConsent = {}
    for day in landed_folders(landing)[0]:
        if after is not None and date.fromisoformat(day) <= after:
            continue
        path = landing / day / CUSTOMERS.landing_file
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        if seen.get(path) == mtime:
            continue
        with duckdb.connect() as con:
            rows = con.execute(
                "SELECT CAST(customer_id AS VARCHAR), TRY_CAST(marketing_consent AS BOOLEAN)"
                " FROM read_parquet($path) WHERE customer_id IS NOT NULL",
                {"path": str(path)},
            ).fetchall()
        seen[path] = mtime
        ids = [r[0] for r in rows]
        for cid, (_, consent) in zip(pseudonymise(ids, key), rows, strict=True):
            if consent is not None:  # unreadable: left to ingestion, which quarantines it
                out[cid] = (day, consent)
    return out


def merge(into: LandedConsent, new: LandedConsent) -> None:
    """Keep each customer's latest landed day (a later file wins, the same day re-landed too)."""
    for cid, (day, consent) in new.items():
        if cid not in into or into[cid][0] <= day:
            into[cid] = (day, consent)


def withdrawn(landed: LandedConsent) -> list[str]:
    """Customers whose latest landed consent is a withdrawal."""
    return [cid for cid, (_, consent) in landed.items() if not consent]
