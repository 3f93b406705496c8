"""The issue's yardstick: a bare FastAPI endpoint that runs `inplace_predict` on a ready-made
feature row, nothing else. `make bench` serves it beside `cartintel serve` and `mlflow models
serve` so the run shows what this machine does for the cheapest possible request today.

    BARE_MODEL_DIR=<BoostedModel.save folder> uvicorn --factory \
        cartintel_tests.benchmarks.bare_server:create_app
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from cartintel_assets.models.abandonment import BoostedModel


class Row(BaseModel):
    x: list[float | None]  # the encoded feature row, in the model's column order


def create_app() -> FastAPI:
    model = BoostedModel.load(Path(os.environ["BARE_MODEL_DIR"]))
    model.booster.set_param({"nthread": 1})
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(row: Row) -> dict[str, float]:
        x = np.array([[np.nan if v is None else v for v in row.x]], dtype=float)
        return {"raw": float(model.booster.inplace_predict(x)[0])}

    return app
