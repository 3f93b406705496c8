"""How well an uplift score ranks who is moved by a treatment: Qini and uplift curves, their
normalised areas, uplift at the top k % and bootstrap intervals. No Dagster import.

Normalisation (stated because published figures differ on it): `qini_auc_score` and
`uplift_auc_score` follow scikit-uplift's `qini_auc_score` / `uplift_auc_score` with
`negative_effect=True`: (area under the model's curve − area under the random line) /
(area under the perfect curve − area under the random line), so random ≈ 0 and perfect = 1.
Each compares one treatment with control: `treatment` is 1 for the arm, 0 for control.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil

import numpy as np


def _cumulative(
    y: np.ndarray, score: np.ndarray, treatment: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts and responders of each group among the top n, at every distinct score (ties
    enter together, so the curve does not depend on the order of equal scores)."""
    y, score, treatment = (np.asarray(a, dtype=float) for a in (y, score, treatment))
    order = np.argsort(-score, kind="mergesort")
    y, score, treatment = y[order], score[order], treatment[order]
    cut = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    n_t = np.cumsum(treatment)[cut]
    n_all = cut + 1.0
    y_t = np.cumsum(y * treatment)[cut]
    y_c = np.cumsum(y * (1 - treatment))[cut]
    return n_all, n_t, n_all - n_t, y_t, y_c


def _from_origin(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[0.0, x], np.r_[0.0, v]


def qini_curve(
    y: np.ndarray, score: np.ndarray, treatment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Incremental responders among the top n: Y_t(n) − Y_c(n) · N_t(n) / N_c(n)."""
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, score, treatment)
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    return _from_origin(n_all, y_t - y_c * ratio)


def uplift_curve(
    y: np.ndarray, score: np.ndarray, treatment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(response rate treated − response rate control) among the top n, times n."""
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, score, treatment)
    rt = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t != 0)
    rc = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c != 0)
    return _from_origin(n_all, (rt - rc) * n_all)


def _perfect_score(y: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """The ranking an oracle would use: treated responders first, control responders last."""
    y, t = np.asarray(y, dtype=float), np.asarray(treatment, dtype=float)
    return y * t - y * (1 - t)


def _normalised_area(
    curve: Callable[..., tuple[np.ndarray, np.ndarray]],
    y: np.ndarray,
    score: np.ndarray,
    treatment: np.ndarray,
) -> float:
    x, v = curve(y, score, treatment)
    xp, vp = curve(y, _perfect_score(y, treatment), treatment)
    random = 0.5 * xp[-1] * vp[-1]
    perfect = float(np.trapezoid(vp, xp)) - random
    if perfect == 0:
        return 0.0
    return (float(np.trapezoid(v, x)) - random) / perfect


def qini_auc_score(y: np.ndarray, score: np.ndarray, treatment: np.ndarray) -> float:
    """Qini coefficient, normalised as scikit-uplift's `qini_auc_score` (random 0, perfect 1)."""
    return _normalised_area(qini_curve, y, score, treatment)


def uplift_auc_score(y: np.ndarray, score: np.ndarray, treatment: np.ndarray) -> float:
    """AUUC, normalised as scikit-uplift's `uplift_auc_score` (random 0, perfect 1)."""
    return _normalised_area(uplift_curve, y, score, treatment)


def uplift_at_k(
    y: np.ndarray, score: np.ndarray, treatment: np.ndarray, k: float = 0.3, by_group: bool = True
) -> float:
    """Response rate of treated minus control among the top k share by score.

    `by_group=True` takes the top k of each group separately (scikit-uplift's
    `strategy='by_group'`, used by its Hillstrom tutorial); otherwise the top k overall.
    """
    if not 0 < k < 1:
        raise ValueError(f"k must be a share in (0, 1), got {k}")
    y, score, t = np.asarray(y, dtype=float), np.asarray(score), np.asarray(treatment) == 1
    order = np.argsort(-score, kind="mergesort")
    y, t = y[order], t[order]
    if by_group:
        yt, yc = y[t], y[~t]
        return float(yt[: ceil(len(yt) * k)].mean() - yc[: ceil(len(yc) * k)].mean())
    top = slice(0, ceil(len(y) * k))
    return float(y[top][t[top]].mean() - y[top][~t[top]].mean())


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    y: np.ndarray,
    score: np.ndarray,
    treatment: np.ndarray,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The metric and its percentile bootstrap interval, resampling rows within each group (so
    every replicate keeps the experiment's treated/control sizes)."""
    y, score, treatment = np.asarray(y), np.asarray(score), np.asarray(treatment)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(treatment == g) for g in (0, 1)]
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        values[b] = metric(y[idx], score[idx], treatment[idx])
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return metric(y, score, treatment), float(lo), float(hi)
