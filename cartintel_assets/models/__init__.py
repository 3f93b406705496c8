"""The learners: abandonment risk, uplift, segmentation, friction drivers and their metrics."""
