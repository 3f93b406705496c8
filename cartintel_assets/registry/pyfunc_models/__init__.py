"""MLflow "models from code": each file here is logged as the code of one pyfunc model, so no
wrapper is pickled. A file only builds its wrapper (defined in `registry.registration`) and hands
it to MLflow with `set_model`; it is run by MLflow when the model is logged or loaded, never
imported by cartintel."""
