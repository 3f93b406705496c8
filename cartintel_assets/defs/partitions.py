"""The one partitioning of the warehouse: a landed day."""

import dagster as dg

# From 2022 so that real foreign event logs (the OTTO sample is from 2022) fit too.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2022-01-01", end_offset=1)
