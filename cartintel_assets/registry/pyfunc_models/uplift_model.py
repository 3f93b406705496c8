"""The uplift model's pyfunc, logged as code (see the package docstring)."""

from mlflow.models import set_model

from cartintel_assets.registry.registration import UpliftPyfunc

set_model(UpliftPyfunc())
