"""Registered model names and aliases, registration and promotion across the roadmap's phases."""
