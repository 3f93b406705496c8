"""XGBoost boosters' predictions, walked by compiled code, for few rows as cheaply as for many.

A prediction through XGBoost's C API costs ~0.5 ms before the first tree is walked when the
rows are new: every `DMatrix` (and every in-place prediction's proxy) builds a `Context`, which
reads the cgroup files and compiles a `std::regex`, and the predictor then sizes every tree. On a
cart's row the walk itself takes ~10 µs. `Forest` holds the trees of one or several boosters as
flat arrays and walks them in numba: each tree's leaf value added in tree order to the output's
intercept in float32, then the logistic link in float32, as XGBoost's CPU predictor does.

Predictions are XGBoost's, bit for bit (the same float32 additions in the same order, the C
library's `logf` and `expf`): `test_forest` holds them to it on trained models, missing values
and early-stopped prefixes included. Models it does not cover (other objectives, several classes
or targets, categorical splits, DART) give None, and their callers ask XGBoost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import xgboost as xgb

# Below this many rows the compiled walk answers first; above it, XGBoost's own threads do
# (`make bench`: 725k carts took 16.0 s walked on one thread, 4.8 s in XGBoost on two).
FOREST_ROWS = 256

# the objectives covered, and whether the prediction is the logistic of the margin
LOGISTIC = {"binary:logistic": True, "reg:squarederror": False}


def margin_intercept(base_score: str, logistic: bool) -> float:
    """A booster's intercept on the margin scale (XGBoost stores a logistic model's as a
    probability, and maps it to the margin in float32 with the C library's `logf`)."""
    (score,) = json.loads(base_score)
    p = np.float32(score)
    return float(_logit(p) if logistic else p)


@numba.njit(cache=True)
def _logit(p: np.float32) -> float:  # pragma: no cover (compiled)
    # numba calls libm's logf on float32, as XGBoost does (numpy's own float32 log differs from
    # it in the last bit for some arguments, e.g. 0.3)
    return -math.log(np.float32(1) / p - np.float32(1))


@dataclass(frozen=True)
class Trees:
    """A booster's trees up to an iteration, as its JSON dump holds them, with what a prediction
    adds to them."""

    trees: list[dict[str, Any]]
    n_features: int
    intercept: float  # on the margin scale
    logistic: bool  # the prediction is the logistic of the margin


def covered_trees(booster: xgb.Booster, iteration_end: int) -> Trees | None:
    """The trees of `booster` before `iteration_end` (0: all), or None when the model is not one
    the compiled walks cover: another objective, several classes or targets, DART, categorical
    splits."""
    learner = json.loads(booster.save_raw("json"))["learner"]
    gbtree = learner["gradient_booster"]
    objective = learner["objective"]["name"]
    params = learner["learner_model_param"]
    if objective not in LOGISTIC or gbtree["name"] != "gbtree":
        return None
    if int(params["num_class"]) > 1 or int(params.get("num_target", "1")) > 1:
        return None
    model = gbtree["model"]
    indptr = model["iteration_indptr"]
    end = indptr[iteration_end] if 0 < iteration_end < len(indptr) else len(model["trees"])
    trees = model["trees"][:end]
    if any(int(t) != 0 for tree in trees for t in tree.get("split_type", [])):
        return None
    logistic = LOGISTIC[objective]
    return Trees(
        trees,
        int(params["num_feature"]),
        margin_intercept(params["base_score"], logistic),
        logistic,
    )


@dataclass(frozen=True)
class Forest:
    """The trees of one or several boosters, each tree adding to one output (its booster's)."""

    n_features: int
    intercept: np.ndarray  # float32, per output: the booster's intercept on the margin scale
    logistic: np.ndarray  # per output: the prediction is the logistic of the margin
    roots: np.ndarray  # each tree's root node
    output: np.ndarray  # each tree's output
    left: np.ndarray  # node's left child (-1: a leaf), absolute
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray  # float32: the row goes left when its value < threshold; leaf value
    default_left: np.ndarray  # missing values go left

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(rows, outputs): each booster's prediction (`Booster.predict`) for the encoded rows `x`
        (missing values NaN), compared in float32 as XGBoost stores them."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {x.shape}")
        out = np.empty((len(x), len(self.intercept)), dtype=np.float32)
        _walk(
            np.ascontiguousarray(x, dtype=np.float32),
            self.roots,
            self.output,
            self.left,
            self.right,
            self.feature,
            self.threshold,
            self.default_left,
            self.intercept,
            self.logistic,
            out,
        )
        return out.astype(float)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _walk(
    x: np.ndarray,
    roots: np.ndarray,
    output: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    default_left: np.ndarray,
    intercept: np.ndarray,
    logistic: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover (compiled; its results are tested)
    one = np.float32(1.0)
    for r in range(x.shape[0]):
        for k in range(intercept.shape[0]):
            out[r, k] = intercept[k]
        for t in range(roots.shape[0]):
            node = roots[t]
            while left[node] != -1:
                v = x[r, feature[node]]
                if v != v:
                    node = left[node] if default_left[node] else right[node]
                elif v < threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[r, output[t]] += threshold[node]
        for k in range(intercept.shape[0]):
            if logistic[k]:
                out[r, k] = one / (one + math.exp(-out[r, k]))


def forest(boosters: Sequence[tuple[xgb.Booster, int]]) -> Forest | None:
    """The trees of each (booster, iteration_end) (0: all its trees) as one forest whose output
    k is booster k's prediction; None when a booster is not one this covers, or the boosters
    disagree on the number of features."""
    roots: list[int] = []
    output: list[int] = []
    intercept: list[float] = []
    logistic: list[bool] = []
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("left", "right", "feature", "threshold", "default_left")
    }
    n_features: set[int] = set()
    nodes = 0
    for k, (booster, iteration_end) in enumerate(boosters):
        covered = covered_trees(booster, iteration_end)
        if covered is None:
            return None
        n_features.add(covered.n_features)
        intercept.append(covered.intercept)
        logistic.append(covered.logistic)
        for tree in covered.trees:
            lc = np.asarray(tree["left_children"], dtype=np.int64)
            rc = np.asarray(tree["right_children"], dtype=np.int64)
            roots.append(nodes)
            output.append(k)
            columns["left"].append(np.where(lc == -1, -1, lc + nodes))
            columns["right"].append(np.where(rc == -1, -1, rc + nodes))
            columns["feature"].append(np.asarray(tree["split_indices"], dtype=np.int64))
            columns["threshold"].append(np.asarray(tree["split_conditions"], dtype=np.float32))
            columns["default_left"].append(np.asarray(tree["default_left"], dtype=np.bool_))
            nodes += len(lc)
    if len(n_features) != 1:
        return None

    def flat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate(columns[name]) if columns[name] else np.zeros(0, dtype=dtype)

    trees = Forest(
        n_features=n_features.pop(),
        intercept=np.array(intercept, dtype=np.float32),
        logistic=np.array(logistic, dtype=np.bool_),
        roots=np.array(roots, dtype=np.int64),
        output=np.array(output, dtype=np.int64),
        left=flat("left", np.int64),
        right=flat("right", np.int64),
        feature=flat("feature", np.int64),
        threshold=flat("threshold", np.float32),
        default_left=flat("default_left", np.bool_),
    )
    trees.predict(np.zeros((0, trees.n_features)))  # compiled (or loaded from cache) now
    return trees
