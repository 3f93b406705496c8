"""Drift and performance of the served models."""
