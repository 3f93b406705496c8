"""Behavioural tests of the models: simulator-truth recovery and real-data quality floors."""
