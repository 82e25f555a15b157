"""The record an incident leaves: its timeline, the archive that outlives Prefect, the report, the live progress."""
