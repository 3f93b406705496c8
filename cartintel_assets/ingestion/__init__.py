"""Landing files into raw tables and quarantine; mappings of foreign event logs."""
