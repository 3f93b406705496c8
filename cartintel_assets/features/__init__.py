"""Cart sessions, outcome labels, point-in-time session features and review signals."""
