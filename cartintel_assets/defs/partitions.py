"""The one partitioning of the warehouse: a landed day.

The first day comes from the deployment file (`partitions: {first_day: YYYY-MM-DD}`, see
`settings.deployment_settings_path`); unset, it is the earliest day folder that has landed, or
2022-01-01 if that is later (so a shop's 2019 log works once landed, and an empty landing still
has partitions). The range is read when the definitions load: after landing older days, reload
the code location (`make dev` does on start).
"""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import BaseModel, Field

from cartintel_assets import settings

DEFAULT_FIRST_DAY = date(2022, 1, 1)


class PartitionSettings(BaseModel):
    """The `partitions` section of the deployment file."""

    first_day: date | None = Field(
        default=None,
        description="First daily partition; unset: the earliest landed day (2022-01-01 at the latest).",
    )


def first_day() -> date:
    """The first daily partition: the setting, else the earliest landed day or the default."""
    configured = settings.deployed(PartitionSettings, "partitions").first_day
    if configured is not None:
        return configured
    from cartintel_assets.ingestion.ingest import landed_folders

    landed = [date.fromisoformat(d) for d in landed_folders(settings.landing_dir())[0]]
    return min([DEFAULT_FIRST_DAY, *landed])


def build_daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists while today's files are still landing
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=1)


daily_partitions = build_daily_partitions(first_day())


class PartitionRangeError(ValueError):
    """A day outside the daily partitions."""


def require_day(day: str, partitions: dg.DailyPartitionsDefinition = daily_partitions) -> str:
    """`day` if it is one of the partitions, else an error naming the day and the setting."""
    try:
        parsed = date.fromisoformat(day)
    except ValueError as exc:
        raise PartitionRangeError(f"{day!r} is not a day (YYYY-MM-DD)") from exc
    start = partitions.start.date()
    last = date.fromisoformat(partitions.get_last_partition_key() or start.isoformat())
    if start <= parsed <= last:
        return day
    where = settings.deployment_settings_path()
    if parsed < start:
        fix = (
            f"set `partitions: {{first_day: {day}}}` in {where} (or land the day first, then"
            " reload the definitions)"
        )
    else:
        fix = "a day after tomorrow cannot have landed yet (a clock or time-zone error?)"
    raise PartitionRangeError(
        f"day {day} is outside the daily partitions {start}..{last}"
        f" (setting partitions.first_day in {where}): {fix}"
    )
