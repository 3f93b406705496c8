"""Behavioural segmentation of customers: a latent-class (finite mixture) model over each
customer's behaviour counts, profile names derived from each class's parameters, and segment ids
kept stable across retrains. No Dagster import.

Why a mixture over counts rather than k-means over rates: most customers have a handful of
sessions, so a rate like "abandoned 1 of 2 carts" is noise; the mixture weighs each customer's
evidence by how much of it there is (binomial, Poisson and exponential likelihoods of the counts),
so one session says little and twenty say a lot. The number of segments is chosen within a
configured range by the integrated completed likelihood (ICL = BIC + 2 × classification entropy),
which, unlike BIC alone, does not reward splitting a segment into overlapping halves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

# (rate, successes column, trials column): per-customer binomial evidence
RATES: tuple[tuple[str, str, str], ...] = (
    ("search_rate", "n_search_sessions", "n_sessions"),
    ("rec_click_rate", "n_rec_clicks", "n_rec_impressions"),
    ("cart_rate", "n_cart_sessions", "n_sessions"),
    ("abandon_rate", "n_abandoned", "n_cart_sessions"),
    ("checkout_abandon_rate", "n_abandoned_at_checkout", "n_abandoned"),
    ("coupon_rate", "n_coupon_sessions", "n_cart_sessions"),
    ("promo_view_share", "n_promo_views", "n_views"),
    ("comeback_rate", "n_comebacks", "n_abandoned_labelled"),
)
# Poisson: extra product views per session; exponential: seconds between events
PROFILE_COLUMNS: tuple[str, ...] = (*(r[0] for r in RATES), "views_per_session", "dwell_seconds")

BEHAVIOUR_SQL = """
WITH ev AS (
    SELECT e.session_id,
           count(*) AS n_events,
           count(*) FILTER (WHERE e.event_type = 'product_view') AS views,
           count(*) FILTER (WHERE e.event_type = 'product_view' AND p.on_promotion) AS promo_views,
           count(*) FILTER (WHERE e.event_type = 'search') AS searches,
           count(*) FILTER (WHERE e.event_type = 'recommendation_impression') AS rec_impressions,
           count(*) FILTER (WHERE e.event_type = 'recommendation_click') AS rec_clicks,
           bool_or(e.event_type = 'add_to_cart') AS carted,
           bool_or(e.event_type = 'begin_checkout') AS checkout,
           bool_or(e.event_type = 'coupon_attempt') AS coupon,
           bool_or(e.event_type = 'purchase') AS bought,
           date_diff('millisecond', min(e.ts), max(e.ts)) / 1000.0 AS secs
    FROM raw_events e
    LEFT JOIN raw_products p ON p.product_id = e.product_id AND p.partition_date = e.partition_date
    WHERE e.partition_date BETWEEN $start AND $end
    GROUP BY e.session_id
),
lab AS (
    SELECT session_id, abandoned, benign FROM abandonment_labels
    WHERE label_complete AND partition_date BETWEEN $start AND $end
)
SELECT s.customer_id,
       count(*) AS n_sessions,
       sum(ev.views) AS n_views,
       sum(ev.promo_views) AS n_promo_views,
       sum(ev.n_events - 1) AS n_gaps,
       sum(ev.secs) AS gap_seconds,
       count(*) FILTER (WHERE ev.searches > 0) AS n_search_sessions,
       sum(ev.rec_impressions) AS n_rec_impressions,
       sum(ev.rec_clicks) AS n_rec_clicks,
       count(*) FILTER (WHERE ev.carted) AS n_cart_sessions,
       count(*) FILTER (WHERE ev.carted AND NOT ev.bought) AS n_abandoned,
       count(*) FILTER (WHERE ev.carted AND NOT ev.bought AND ev.checkout) AS n_abandoned_at_checkout,
       count(*) FILTER (WHERE ev.carted AND ev.coupon) AS n_coupon_sessions,
       count(lab.session_id) FILTER (WHERE lab.abandoned) AS n_abandoned_labelled,
       count(lab.session_id) FILTER (WHERE lab.abandoned AND lab.benign) AS n_comebacks
FROM raw_sessions s JOIN ev USING (session_id)
LEFT JOIN lab USING (session_id)
WHERE s.partition_date BETWEEN $start AND $end
GROUP BY s.customer_id
ORDER BY s.customer_id
"""


def customer_behaviour(con: duckdb.DuckDBPyConnection, start: date, end: date) -> pd.DataFrame:
    """Per customer with sessions between `start` and `end`: the behaviour counts the model uses
    (abandonment_labels must exist; customers whose carts have no complete label yet count 0)."""
    return con.execute(BEHAVIOUR_SQL, {"start": start, "end": end}).df()


EVIDENCE_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            *(c for _, c, t in RATES for c in (c, t)),
            "n_views",
            "n_sessions",
            "n_gaps",
            "gap_seconds",
        ]
    )
)


def evidence_frame(counts: pd.DataFrame) -> pd.DataFrame:
    """The columns the model reads, as floats (the input schema of the registered model)."""
    return counts[list(EVIDENCE_COLUMNS)].astype(float)


# Segment features of a cart: the shopper's segment as of the cart, from their earlier sessions
# only (the point-in-time `prior_*` features), told as the profile they are expected to have:
# each profile parameter averaged over the segments, weighted by the posterior. The names stay
# the same whatever the number of segments or their ids, so a model can keep them across
# re-segmentations; a first-time shopper gets the shop's average profile.
SEGMENT_FEATURES: tuple[str, ...] = tuple(f"segment_{c}" for c in PROFILE_COLUMNS)


# each of the mixture's counts, and the history feature it is read from (besides these, the
# count of abandoned carts is the abandonment rate times the carts)
_FROM_HISTORY: dict[str, str] = {
    "n_sessions": "prior_sessions",
    "n_views": "prior_views",
    "n_promo_views": "prior_promo_views",
    "n_gaps": "prior_gaps",
    "gap_seconds": "prior_gap_seconds",
    "n_search_sessions": "prior_search_sessions",
    "n_rec_impressions": "prior_rec_impressions",
    "n_rec_clicks": "prior_rec_clicks",
    "n_cart_sessions": "prior_cart_sessions",
    "n_abandoned_at_checkout": "prior_checkout_abandons",
    "n_coupon_sessions": "prior_coupon_carts",
}
# the columns of a cart's row that its segment features are computed from
HISTORY_INPUTS: tuple[str, ...] = (*_FROM_HISTORY.values(), "prior_abandonment_rate")


def history_evidence(rows: Mapping[str, Any]) -> pd.DataFrame:
    """The mixture's counts (EVIDENCE_COLUMNS) from a cart's point-in-time history features
    (HISTORY_INPUTS of `features.session_features`; a frame or numpy columns). Whether an
    earlier abandonment came back is only known once its label is final, so that evidence is
    left out (0 trials): the comeback rate is then inferred from the rest."""

    def col(name: str) -> np.ndarray:
        return np.nan_to_num(np.asarray(rows[name], dtype=float))

    out = pd.DataFrame({n: col(f) for n, f in _FROM_HISTORY.items()})
    out["n_abandoned"] = np.rint(col("prior_abandonment_rate") * out["n_cart_sessions"])
    out["n_abandoned_labelled"] = 0.0
    out["n_comebacks"] = 0.0
    return out[list(EVIDENCE_COLUMNS)]


def segment_features(model: SegmentationModel, rows: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SEGMENT_FEATURES of each row, from its history features (see `history_evidence`)."""
    post = model.predict_proba(history_evidence(rows))
    profile = np.column_stack(
        [np.array(model.rates), 1 + np.array(model.extra_views), np.array(model.dwell)]
    )
    values = post @ profile
    return {f: values[:, j] for j, f in enumerate(SEGMENT_FEATURES)}


def with_segment_features(
    frame: pd.DataFrame, model: SegmentationModel | None
) -> tuple[pd.DataFrame, list[str]]:
    """`frame` with its SEGMENT_FEATURES under `model`, and their names, for a model to learn
    from (give it the segmentation after fitting: `BoostedModel.segmentation`); unchanged and
    none without a model (no segmentation yet)."""
    if model is None:
        return frame, []
    return frame.assign(**segment_features(model, frame)), list(SEGMENT_FEATURES)


def _evidence(counts: pd.DataFrame) -> tuple[np.ndarray, ...]:
    s = np.column_stack([counts[c].to_numpy(dtype=float) for _, c, _ in RATES])
    t = np.column_stack([counts[c].to_numpy(dtype=float) for _, _, c in RATES])
    views = (counts["n_views"] - counts["n_sessions"]).clip(lower=0).to_numpy(dtype=float)
    return (
        s,
        t,
        views,
        counts["n_sessions"].to_numpy(dtype=float),
        (counts["n_gaps"].to_numpy(dtype=float)),
        counts["gap_seconds"].to_numpy(dtype=float),
    )


def _joint_loglik(
    evidence: tuple[np.ndarray, ...],
    w: np.ndarray,
    p: np.ndarray,
    lam: np.ndarray,
    mu: np.ndarray,
) -> np.ndarray:
    """Binomial rates, Poisson extra views and exponential gaps (constants dropped), plus the
    log segment weight: customers x segments."""
    s, t, v, n, g, gs = evidence
    return (
        s @ np.log(p).T
        + (t - s) @ np.log1p(-p).T
        + v[:, None] * np.log(lam)[None]
        - n[:, None] * lam[None]
        - g[:, None] * np.log(mu)[None]
        - gs[:, None] / mu[None]
        + np.log(w)[None]
    )


@dataclass
class SegmentationModel:
    """Mixture parameters per segment, the segment ids and names, and how k was chosen."""

    weights: list[float]
    rates: list[list[float]]  # segment x RATES
    extra_views: list[float]  # Poisson mean of product views beyond the first, per session
    dwell: list[float]  # mean seconds between events
    segment_ids: list[int]
    names: list[str]
    selection: list[dict[str, float]] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.weights)

    def log_likelihoods(self, counts: pd.DataFrame) -> np.ndarray:
        """Per customer and segment: log(weight) + log-likelihood of the customer's counts."""
        p = np.clip(np.array(self.rates), 1e-6, 1 - 1e-6)
        return _joint_loglik(
            _evidence(counts),
            np.array(self.weights),
            p,
            np.array(self.extra_views),
            np.array(self.dwell),
        )

    def predict_proba(self, counts: pd.DataFrame) -> np.ndarray:
        ll = self.log_likelihoods(counts)
        return np.exp(ll - logsumexp(ll, axis=1)[:, None])

    def predict(self, counts: pd.DataFrame) -> np.ndarray:
        """The segment id of each customer (most probable segment)."""
        return np.array(self.segment_ids)[self.predict_proba(counts).argmax(axis=1)]

    def profiles(self) -> pd.DataFrame:
        """One row per segment: id, name, share of customers and the parameters behind the name."""
        out = pd.DataFrame(np.array(self.rates), columns=[r[0] for r in RATES])
        out["views_per_session"] = 1 + np.array(self.extra_views)
        out["dwell_seconds"] = np.array(self.dwell)
        out.insert(0, "share", np.array(self.weights))
        out.insert(0, "segment_name", self.names)
        out.insert(0, "segment_id", self.segment_ids)
        return out.sort_values("segment_id").reset_index(drop=True)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> SegmentationModel:
        return cls(**json.loads(path.read_text()))


def _em(
    s: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    n: np.ndarray,
    g: np.ndarray,
    gs: np.ndarray,
    k: int,
    rng: np.random.Generator,
    max_iter: int = 500,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One EM run from a random soft assignment; weak priors keep parameters off the bounds."""
    resp = rng.dirichlet(np.ones(k), len(s))
    previous = -np.inf
    mean_gap = gs.sum() / max(g.sum(), 1.0)
    for _ in range(max_iter):
        w = resp.sum(0) / resp.sum()
        p = (resp.T @ s + 1) / (resp.T @ t + 2)
        lam = (resp.T @ v + 1) / (resp.T @ n + 1)
        mu = (resp.T @ gs + mean_gap) / (resp.T @ g + 1)
        ll = _joint_loglik((s, t, v, n, g, gs), w, p, lam, mu)
        total = logsumexp(ll, axis=1)
        resp = np.exp(ll - total[:, None])
        if total.sum() - previous < 1e-7 * abs(previous):
            break
        previous = total.sum()
    return float(total.sum()), resp, w, p, lam, mu


def fit_segmentation(
    counts: pd.DataFrame, k_min: int = 3, k_max: int = 8, restarts: int = 4, seed: int = 7
) -> SegmentationModel:
    """Fit the mixture for every k in [k_min, k_max] (best of `restarts` EM runs each) and keep
    the k with the lowest ICL. Ids are 0..k-1 and names come from the parameters; call
    `align_segments` to carry ids over from a previous model."""
    if len(counts) < 10 * k_max:
        raise ValueError(f"{len(counts)} customers are too few to fit up to {k_max} segments")
    s, t, v, n, g, gs = _evidence(counts)
    rng = np.random.default_rng(seed)
    n_params_per_segment = len(RATES) + 2
    best: tuple[float, int, tuple] | None = None  # type: ignore[type-arg]
    selection = []
    for k in range(k_min, k_max + 1):
        runs = [_em(s, t, v, n, g, gs, k, rng) for _ in range(restarts)]
        loglik, resp, *params = max(runs, key=lambda r: r[0])
        bic = -2 * loglik + (k * n_params_per_segment + k - 1) * np.log(len(counts))
        entropy = float(-(resp * np.log(np.clip(resp, 1e-300, 1))).sum())
        icl = bic + 2 * entropy
        selection.append({"k": k, "log_likelihood": loglik, "bic": float(bic), "icl": float(icl)})
        if best is None or icl < best[0]:
            best = (icl, k, tuple(params))
    assert best is not None
    _, k, (w, p, lam, mu) = best
    model = SegmentationModel(
        weights=w.tolist(),
        rates=p.tolist(),
        extra_views=lam.tolist(),
        dwell=mu.tolist(),
        segment_ids=list(range(k)),
        names=[""] * k,
        selection=selection,
    )
    model.names = profile_names(model)
    return model


def _signature(model: SegmentationModel) -> np.ndarray:
    """Each segment's parameters on comparable scales: log-odds of the rates, logs of the rest."""
    p = np.clip(np.array(model.rates), 1e-4, 1 - 1e-4)
    return np.column_stack(
        [np.log(p / (1 - p)), np.log(np.array(model.extra_views)), np.log(np.array(model.dwell))]
    )


# Archetypes: the parameters that make a profile, with the direction they go.
ARCHETYPES: dict[str, dict[str, float]] = {
    "decisive buyers": {"abandon_rate": -1.0, "dwell_seconds": -1.0, "comeback_rate": 0.3},
    "window shoppers": {
        "cart_rate": -1.0,
        "views_per_session": 1.0,
        "rec_click_rate": 0.5,
        "comeback_rate": -0.5,
    },
    "deal seekers": {"promo_view_share": 1.0, "coupon_rate": 1.0},
    "price comparers": {"search_rate": 1.5, "views_per_session": 0.3},
    "delayed deciders": {"comeback_rate": 1.0, "abandon_rate": 0.5, "checkout_abandon_rate": -0.3},
    "shipping-sensitive shoppers": {"checkout_abandon_rate": 1.5, "comeback_rate": -0.3},
}


def profile_names(model: SegmentationModel) -> list[str]:
    """A readable name per segment from its parameters: each segment's standardised parameters
    are scored against the archetypes and names assigned one-to-one (Hungarian); segments beyond
    the number of archetypes get their best archetype with a numeral."""
    sig = _signature(model)
    w = np.array(model.weights)
    mean = (w[:, None] * sig).sum(0)
    sd = np.sqrt((w[:, None] * (sig - mean) ** 2).sum(0)) + 1e-9
    z = pd.DataFrame((sig - mean) / sd, columns=list(PROFILE_COLUMNS))
    names = list(ARCHETYPES)
    score = np.array(
        [[sum(d * z.loc[i, c] for c, d in ARCHETYPES[a].items()) for a in names] for i in z.index]
    )
    rows, cols = linear_sum_assignment(-score)
    out = [""] * model.k
    for r, c in zip(rows, cols, strict=True):
        out[r] = names[c]
    for i in range(model.k):
        if not out[i]:
            base = names[int(score[i].argmax())]
            same = sum(1 for o in out if o.startswith(base))
            out[i] = f"{base} ({same + 1})"
    return out


def align_segments(
    model: SegmentationModel, previous: SegmentationModel | None, max_distance: float = 3.0
) -> pd.DataFrame:
    """Give the new segments the ids of the previous model's closest segments (one-to-one,
    Hungarian on the distance between their parameter signatures); a segment with no previous
    segment within `max_distance` gets a new id. Updates `model.segment_ids` in place and returns
    the match report: new segment, its id, the previous segment and name, and the distance."""
    if previous is None:
        model.segment_ids = list(range(model.k))
        return pd.DataFrame(
            {
                "segment_name": model.names,
                "segment_id": model.segment_ids,
                "previous_segment_id": [None] * model.k,
                "previous_name": [None] * model.k,
                "distance": [np.nan] * model.k,
                "status": ["new (first model)"] * model.k,
            }
        )
    a, b = _signature(model), _signature(previous)
    scale = np.vstack([a, b]).std(0) + 1e-9
    dist = np.sqrt((((a[:, None, :] - b[None, :, :]) / scale) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(dist)
    ids: list[int | None] = [None] * model.k
    prev_of: list[int | None] = [None] * model.k
    for r, c in zip(rows, cols, strict=True):
        if dist[r, c] <= max_distance:
            ids[r], prev_of[r] = previous.segment_ids[c], c
    next_id = max(previous.segment_ids) + 1
    for i in range(model.k):
        if ids[i] is None:
            ids[i], next_id = next_id, next_id + 1
    model.segment_ids = [int(i) for i in ids if i is not None]
    return pd.DataFrame(
        {
            "segment_name": model.names,
            "segment_id": model.segment_ids,
            "previous_segment_id": [
                previous.segment_ids[c] if c is not None else None for c in prev_of
            ],
            "previous_name": [previous.names[c] if c is not None else None for c in prev_of],
            "distance": [
                float(dist[i, c]) if c is not None else np.nan for i, c in enumerate(prev_of)
            ],
            "status": ["matched" if c is not None else "new" for c in prev_of],
        }
    )
