"""The segmentation model's pyfunc, logged as code (see the package docstring)."""

from mlflow.models import set_model

from cartintel_assets.registry.registration import SegmentationPyfunc

set_model(SegmentationPyfunc())
