"""The executive dashboard."""
