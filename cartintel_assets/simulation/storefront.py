"""The simulated storefront: a seeded shop whose hidden truth the platform must recover.

It writes, per day, the landing files a real shop's event pipeline would produce (see
`cartintel_assets.contracts.schema`) and, separately, the ground truth that only tests read: each
customer's latent behavioural type, each cart session's true purchase probability under every
intervention, the planted friction effects, benign versus harmful abandonment, injected drift and
injected bad rows.

Calibration defaults come from public figures (see the shared DOMAIN notes): ~70 % of carts are
abandoned (Baymard), ~48 % of abandonment is benign (the shopper was not ready and comes back).
Everything is vectorised with numpy; no Dagster import.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cartintel_assets.contracts import schema

TYPE_NAMES: tuple[str, ...] = (
    "decisive_buyer",
    "price_comparer",
    "deal_seeker",
    "window_shopper",
    "delayed_decider",
    "shipping_sensitive",
)
DRIFT_KINDS: tuple[str, ...] = ("shipping_cost", "device_mix", "price_level")
BAD_ROW_KINDS: tuple[str, ...] = (
    "malformed_json",
    "missing_id",
    "negative_price",
    "unknown_product",
    "unknown_session",
    "duplicate",
    "out_of_order",
    "future_timestamp",
)
# The quarantine rule each injected defect must end up under.
BAD_ROW_RULES: dict[str, str] = {
    "malformed_json": "malformed_record",
    "missing_id": "missing_required_field",
    "negative_price": "out_of_range",
    "unknown_product": "unknown_product",
    "unknown_session": "unknown_session",
    "duplicate": "duplicate_record",
    "out_of_order": "out_of_order_timestamp",
    "future_timestamp": "future_timestamp",
}


@dataclass(frozen=True)
class TypeParams:
    """Per latent type behaviour, one value per entry of TYPE_NAMES (logit-scale effects)."""

    mix: tuple[float, ...] = (0.20, 0.16, 0.15, 0.20, 0.15, 0.14)
    visit_rate: tuple[float, ...] = (1.0, 1.3, 1.2, 1.6, 1.2, 1.0)
    mean_views: tuple[float, ...] = (3.0, 6.0, 5.0, 7.0, 5.0, 4.0)
    p_cart: tuple[float, ...] = (0.80, 0.55, 0.60, 0.30, 0.60, 0.55)
    purchase_base: tuple[float, ...] = (2.2, 0.3, -0.1, -2.5, -1.6, 0.6)
    # per +100 % price vs the 30-day median (so -12 means -1.2 logit for a 10 % rise)
    price_change: tuple[float, ...] = (-1.0, -12.0, -8.0, -1.0, -2.0, -2.0)
    promotion: tuple[float, ...] = (0.0, 0.3, 1.0, 0.0, 0.0, 0.0)
    # per unit of shipping cost / cart value
    ship_share: tuple[float, ...] = (-0.5, -4.0, -3.0, -1.5, -3.0, -12.0)
    # per delivery day beyond 3
    delivery_days: tuple[float, ...] = (-0.02, -0.10, -0.10, 0.0, -0.10, -0.35)
    # per star of the carted products' mean rating above 4
    review: tuple[float, ...] = (0.3, 0.8, 0.5, 0.3, 0.8, 0.5)
    coupon_rate: tuple[float, ...] = (0.02, 0.15, 0.60, 0.05, 0.05, 0.10)
    # extra chance that a viewed product is one on promotion that day (deal seekers browse sales)
    promo_affinity: tuple[float, ...] = (0.0, 0.1, 0.6, 0.05, 0.0, 0.05)
    # browsing tempo: mean seconds between a session's events (decisive buyers are quick, window
    # shoppers linger)
    dwell_seconds: tuple[float, ...] = (18.0, 45.0, 32.0, 70.0, 40.0, 26.0)
    # share of recommendation impressions that get a click
    rec_click_rate: tuple[float, ...] = (0.08, 0.12, 0.25, 0.45, 0.20, 0.10)
    # share of abandoned carts that reached checkout first (cost-sensitive shoppers go there to see
    # the shipping cost, then leave)
    checkout_before_abandoning: tuple[float, ...] = (0.5, 0.4, 0.5, 0.15, 0.35, 0.9)
    # logit of buying the abandoned cart within 7 days without any intervention
    return_base: tuple[float, ...] = (0.8, -0.5, -1.0, -3.0, 1.5, -0.8)
    # share of the cart's friction (price, shipping, delivery logit terms) that still holds the
    # shopper back over the next 7 days: a cost that drove the cart away keeps it away
    friction_persistence: float = 0.7
    # treatment effects on that logit: rows = types, columns = schema.TREATMENTS
    treatment_effect: tuple[tuple[float, ...], ...] = (
        (0.0, 0.05, 0.05, 0.05, 0.05),  # sure things
        (0.0, 0.10, 0.30, 0.70, 1.10),
        (0.0, 0.00, 0.30, 0.60, 1.40),
        (0.0, 0.00, 0.00, 0.00, 0.00),  # lost causes
        (0.0, 0.40, 0.10, 0.10, 0.10),
        (0.0, -0.50, 1.30, 0.20, 0.40),  # emails annoy; free shipping works
    )


@dataclass(frozen=True)
class DriftSpec:
    """A shift injected from `start_day` (0-based): kind in DRIFT_KINDS, optionally one region."""

    start_day: int
    kind: str
    magnitude: float
    region: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift kind {self.kind!r}; expected one of {DRIFT_KINDS}")


@dataclass(frozen=True)
class StorefrontConfig:
    """Everything that defines one simulated storefront; the same config and seed give the same bytes."""

    seed: int = 7
    start_date: date = date(2026, 10, 1)
    days: int = 14
    sessions_per_day: int = 1500
    n_customers: int = 6000
    n_products: int = 300
    regions: tuple[str, ...] = ("DE", "FR", "NL", "ES", "UK", "US")
    region_weights: tuple[float, ...] = (0.25, 0.17, 0.10, 0.12, 0.16, 0.20)
    categories: tuple[str, ...] = ("apparel", "shoes", "electronics", "home", "beauty", "sports")
    types: TypeParams = field(default_factory=TypeParams)
    cart_abandonment_rate: float = 0.70  # Baymard average, calibrated before any drift
    benign_abandonment_share: float = 0.48  # share of abandoners who come back and buy in 7 days
    consent_rate: float = 0.65
    # share of eligible abandoned carts entering the randomised experiment: the shop randomises
    # every consenting abandoner (the arms include control) until the uplift model is trusted
    experiment_rate: float = 1.0
    # the experiment runs on the first `experiment_days` days only (None: every day); after it,
    # nobody acts on a cart unless a `Shop` is told to (the plan, its exploration, the service)
    experiment_days: int | None = None
    review_rate: float = 0.15
    new_customer_share: float = 0.15  # customers who sign up during the simulated window
    drift: tuple[DriftSpec, ...] = ()
    bad_row_rate: float = 0.0  # share of event lines given exactly one defect
    bad_row_kinds: tuple[str, ...] = BAD_ROW_KINDS
    # None: one random stream for everything. Set: the customers and all they do are drawn from
    # a stream of their own after the catalogue, so storefronts that differ only in it share
    # products, prices and carrier rates and have independent customers (one shop's customers,
    # simulated a part at a time when the whole does not fit in memory)
    population_seed: int | None = None

    def __post_init__(self) -> None:
        if self.days < 1 or self.sessions_per_day < 1:
            raise ValueError("days and sessions_per_day must be positive")
        if len(self.regions) != len(self.region_weights):
            raise ValueError("regions and region_weights differ in length")
        if not 0.0 <= self.bad_row_rate < 0.5:
            raise ValueError("bad_row_rate must be in [0, 0.5)")
        unknown = set(self.bad_row_kinds) - set(BAD_ROW_KINDS)
        if unknown:
            raise ValueError(f"unknown bad row kinds {sorted(unknown)}")

    def day(self, i: int) -> date:
        return self.start_date + timedelta(days=i)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["start_date"] = self.start_date.isoformat()
        return json.dumps(d, sort_keys=True)


@dataclass
class Storefront:
    """What one simulation produced: landing frames per day and the ground truth."""

    config: StorefrontConfig
    landing: dict[str, dict[str, pd.DataFrame]]  # day iso -> table -> well-formed rows
    # defective event lines (and copies of good ones) landed after the well-formed rows
    bad_event_lines: dict[str, list[str]]
    truth_customers: pd.DataFrame
    truth_sessions: pd.DataFrame
    truth_bad_rows: pd.DataFrame
    truth_effects: dict[str, object]

    def event_lines(self, day: str) -> int:
        """How many lines the day's events file has."""
        return len(self.landing[day]["events"]) + len(self.bad_event_lines[day])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _offset_for_mean(logits: np.ndarray, target: float) -> float:
    """Solve mean(sigmoid(logits + c)) = target for c by bisection (monotone in c)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _segment_positions(counts: np.ndarray) -> np.ndarray:
    """0..n-1 within each run of a repeat: for counts [2,3] gives [0,1,0,1,2]."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _session_clock(
    sess: np.ndarray, n: int, mean_gap_s: float | np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For events sorted by session: position in the session and seconds since its first event
    (`mean_gap_s`: one mean gap, or one per event)."""
    counts = np.bincount(sess, minlength=n)
    seq = _segment_positions(counts)
    gap = rng.exponential(mean_gap_s, len(sess))
    gap[seq == 0] = 0.0
    csum = np.cumsum(gap)
    return seq, csum - np.repeat(csum[np.cumsum(counts) - counts], counts)


def _iso(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")


class _Sim:
    """One simulation run; methods build the tables in order on shared state."""

    def __init__(self, cfg: StorefrontConfig, progress: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        # every potential return from a stream of its own: decisions change none of the others
        self.return_rng = np.random.default_rng([cfg.seed, cfg.population_seed or 0, 1])
        self.progress = progress
        self.tp = cfg.types
        self.day0 = np.datetime64(cfg.start_date.isoformat(), "D")

    # ---- catalogue, prices and shipping -------------------------------------------------
    def products(self) -> None:
        cfg, rng = self.cfg, self.rng
        n, hist = cfg.n_products, 30
        self.product_ids = np.array([f"P{i:05d}" for i in range(n)])
        self.cat_idx = rng.integers(0, len(cfg.categories), n)
        cat_price = np.linspace(25, 160, len(cfg.categories))[rng.permutation(len(cfg.categories))]
        self.list_price = np.round(cat_price[self.cat_idx] * rng.lognormal(0, 0.45, n), 2)
        class_by_cat = rng.integers(0, len(schema.WEIGHT_CLASSES), len(cfg.categories))
        self.weight_idx = np.clip(class_by_cat[self.cat_idx] + rng.integers(-1, 2, n), 0, 3)
        self.quality = rng.normal(0, 1, n)
        self.mean_rating = np.clip(4.0 + 0.55 * self.quality, 1.5, 5.0)
        self.popularity = rng.dirichlet(np.full(n, 0.6))
        # daily price path over 30 days of history + the window: AR(1) noise and promotions
        total = hist + cfg.days
        noise = np.zeros((total, n))
        eps = rng.normal(0, 0.02, (total, n))
        for t in range(1, total):
            noise[t] = 0.8 * noise[t - 1] + eps[t]
        starts = rng.random((total, n)) < 0.015
        promo = np.zeros((total, n), dtype=bool)
        for k in range(4):  # a promotion lasts 4 days
            promo[k:] |= starts[: total - k]
        depth = rng.choice([0.1, 0.2, 0.3], size=n)
        price = self.list_price * (1 + noise) * np.where(promo, 1 - depth, 1.0)
        for d in cfg.drift:
            if d.kind == "price_level":
                price[hist + d.start_day :] *= 1 + d.magnitude
        self.price = np.round(np.maximum(price, 0.5), 2)
        self.promo = promo
        median30 = np.stack(
            [np.median(self.price[t - hist : t], axis=0) for t in range(hist, total)]
        )
        self.price_window = self.price[hist:]
        self.promo_window = promo[hist:]
        self.price_change = self.price_window / median30 - 1.0  # day x product
        # a few product-days change price during the day
        self.intraday = rng.random((cfg.days, n)) < 0.03
        self.intraday_sec = rng.integers(8 * 3600, 20 * 3600, (cfg.days, n))
        self.intraday_price = np.round(
            self.price_window * (1 + rng.uniform(-0.1, 0.15, (cfg.days, n))), 2
        )

    def shipping(self) -> None:
        cfg, rng = self.cfg, self.rng
        r = len(cfg.regions)
        base_cost = np.linspace(4.5, 9.9, r)[rng.permutation(r)]
        base_days = rng.integers(2, 6, r)
        class_factor = np.array([0.6, 1.0, 1.8, 3.5])
        class_days = np.array([0, 0, 1, 3])
        cost = base_cost[None, :, None] * class_factor[None, None, :]
        cost = cost * rng.lognormal(0, 0.05, (cfg.days, r, 4))
        for d in cfg.drift:
            if d.kind == "shipping_cost":
                regions = [cfg.regions.index(d.region)] if d.region else list(range(r))
                cost[d.start_day :, regions, :] *= 1 + d.magnitude
        self.ship_cost = np.round(cost, 2)
        noise_days = rng.integers(0, 2, (cfg.days, r, 4))
        self.ship_days = base_days[None, :, None] + class_days[None, None, :] + noise_days

    # ---- customers ------------------------------------------------------------------------
    def customers(self) -> None:
        cfg, rng = self.cfg, self.rng
        n = cfg.n_customers
        self.cust_ids = np.array([f"C{i:07d}" for i in range(n)])
        self.cust_type = rng.choice(len(TYPE_NAMES), n, p=np.array(self.tp.mix) / sum(self.tp.mix))
        self.cust_region = rng.choice(len(cfg.regions), n, p=np.array(cfg.region_weights))
        new = rng.random(n) < cfg.new_customer_share
        self.signup_day = np.where(new, rng.integers(0, cfg.days, n), -rng.integers(1, 720, n))
        consent_p = np.clip(
            cfg.consent_rate + np.array([0, 0.05, 0.1, -0.1, 0, 0])[self.cust_type], 0, 1
        )
        self.consent = rng.random(n) < consent_p
        device_p = np.array([[0.55, 0.35, 0.10]] * len(TYPE_NAMES))
        device_p[3] = [0.75, 0.15, 0.10]  # window shoppers browse on phones
        device_p[0] = [0.40, 0.50, 0.10]
        u = rng.random(n)[:, None]
        self.pref_device = (u > np.cumsum(device_p[self.cust_type], axis=1)).sum(axis=1)
        self.activity = np.array(self.tp.visit_rate)[self.cust_type] * rng.lognormal(0, 0.5, n)

    # ---- sessions and their outcomes ------------------------------------------------------
    def sessions(self) -> None:
        cfg, rng, tp = self.cfg, self.rng, self.tp
        weekday = np.array([1.0, 0.95, 0.95, 1.0, 1.05, 1.15, 1.1])
        per_day = []
        for i in range(cfg.days):
            n_d = int(round(cfg.sessions_per_day * weekday[cfg.day(i).weekday()]))
            w = self.activity * (self.signup_day <= i)
            per_day.append((np.full(n_d, i), rng.choice(cfg.n_customers, n_d, p=w / w.sum())))
        day = np.concatenate([p[0] for p in per_day])
        cust = np.concatenate([p[1] for p in per_day])
        n = len(day)
        self.s_n = n
        ctype = self.cust_type[cust]
        hour_p = np.array(
            [
                1,
                0.6,
                0.4,
                0.3,
                0.3,
                0.5,
                1,
                2,
                3,
                3.5,
                4,
                4,
                4.5,
                4.5,
                4,
                4,
                4.5,
                5,
                6,
                7,
                7.5,
                6.5,
                4.5,
                2.5,
            ]
        )
        hour = rng.choice(24, n, p=hour_p / hour_p.sum())
        sec = hour * 3600 + rng.integers(0, 3600, n)
        device = np.where(
            rng.random(n) < 0.7, self.pref_device[cust], rng.choice(3, n, p=[0.55, 0.35, 0.10])
        )
        for d in cfg.drift:
            if d.kind == "device_mix":
                hit = (day >= d.start_day) & (rng.random(n) < d.magnitude)
                if d.region:
                    hit &= self.cust_region[cust] == cfg.regions.index(d.region)
                device = np.where(hit, 0, device)  # shift towards mobile
        source = rng.choice(5, n, p=[0.3, 0.3, 0.1, 0.1, 0.2])
        n_views = 1 + rng.poisson(np.array(tp.mean_views)[ctype] - 1)
        has_cart = rng.random(n) < np.array(tp.p_cart)[ctype]
        n_cart = np.where(has_cart, np.minimum(1 + rng.binomial(2, 0.3, n), n_views), 0)
        # viewed products; the first n_cart views are the carted ones
        view_prod = rng.choice(cfg.n_products, int(n_views.sum()), p=self.popularity)
        view_sess = np.repeat(np.arange(n), n_views)
        to_promo = rng.random(len(view_prod)) < np.array(tp.promo_affinity)[ctype[view_sess]]
        for di in range(cfg.days):
            on_sale = np.flatnonzero(self.promo_window[di])
            pick = to_promo & (day[view_sess] == di)
            if len(on_sale) and pick.any():
                w = self.popularity[on_sale]
                view_prod[pick] = rng.choice(on_sale, int(pick.sum()), p=w / w.sum())
        view_start = np.cumsum(n_views) - n_views
        region = self.cust_region[cust]
        # cart friction, from the carted products
        cart_sess = np.repeat(np.arange(n), n_cart)
        cart_pos = _segment_positions(n_cart)
        cart_prod = view_prod[view_start[cart_sess] + cart_pos]
        cart_qty = 1 + (rng.random(len(cart_prod)) < 0.12).astype(int)
        cart_day = day[cart_sess]
        unit = self.price_window[cart_day, cart_prod]
        cart_value = np.bincount(cart_sess, unit * cart_qty, minlength=n)
        pchg: np.ndarray = np.bincount(
            cart_sess, self.price_change[cart_day, cart_prod], minlength=n
        )
        promo = np.bincount(cart_sess, self.promo_window[cart_day, cart_prod], minlength=n) > 0
        rating: np.ndarray = np.bincount(cart_sess, self.mean_rating[cart_prod], minlength=n)
        wclass = np.zeros(n, dtype=int)
        np.maximum.at(wclass, cart_sess, self.weight_idx[cart_prod])
        safe = np.maximum(n_cart, 1)
        pchg, rating = pchg / safe, np.where(n_cart > 0, rating / safe, 4.0)
        ship_cost = self.ship_cost[day, region, wclass]
        ship_days = self.ship_days[day, region, wclass]
        ship_share = np.where(cart_value > 0, ship_cost / np.maximum(cart_value, 1e-9), 0.0)
        price_friction = np.array(tp.price_change)[ctype] * pchg
        ship_friction = np.array(tp.ship_share)[ctype] * ship_share + np.array(tp.delivery_days)[
            ctype
        ] * (ship_days - 3)
        friction = price_friction + ship_friction
        logit = (
            np.array(tp.purchase_base)[ctype]
            + friction
            + np.array(tp.promotion)[ctype] * promo
            + np.array(tp.review)[ctype] * (rating - 4.0)
            - 0.3 * (device == 0)
        )
        first_drift = min([d.start_day for d in cfg.drift], default=cfg.days)
        calib = has_cart & (day < max(first_drift, 1))
        self.purchase_offset = _offset_for_mean(logit[calib], 1 - cfg.cart_abandonment_rate)
        p_buy = np.where(has_cart, _sigmoid(logit + self.purchase_offset), 0.0)
        u_buy = rng.random(n)
        purchased = has_cart & (u_buy < p_buy)
        abandoned = has_cart & ~purchased
        # the randomness of what follows, drawn in a fixed order (the stream stays reproducible)
        consented = self.consent[cust]
        in_exp = abandoned & consented & (rng.random(n) < cfg.experiment_rate)
        if cfg.experiment_days is not None:
            in_exp &= day < cfg.experiment_days
        treatment = np.where(in_exp, rng.integers(0, len(schema.TREATMENTS), n), 0)
        u_ret = rng.random(n)
        return_delay = np.where(ctype == 4, rng.integers(1, 4, n), rng.integers(1, 8, n))
        coupon = has_cart & (rng.random(n) < np.array(tp.coupon_rate)[ctype])
        # 7-day outcome of an abandoned cart under each intervention (common random numbers)
        eff = np.array(tp.treatment_effect)[ctype]  # n x treatments
        # free shipping moves those whose shipping share is high; a discount moves those who
        # were hunting for one (tried a coupon) or whose cart got dearer than its usual price
        eff[:, 2] = eff[:, 2] * np.clip(ship_share / 0.1, 0.3, 2.0)
        discount_scale = (0.5 + 1.5 * coupon) * np.clip(1 + 5 * np.maximum(pchg, 0), 1.0, 2.0)
        eff[:, 3:] = eff[:, 3:] * discount_scale[:, None]
        rbase = np.array(tp.return_base)[ctype] + tp.friction_persistence * friction
        self.return_offset = _offset_for_mean(
            rbase[abandoned & calib], cfg.benign_abandonment_share
        )
        p_conv = _sigmoid(rbase[:, None] + self.return_offset + eff)
        returned = abandoned & (u_ret < p_conv[np.arange(n), treatment])
        reach_checkout = purchased | (
            abandoned & (rng.random(n) < np.array(tp.checkout_before_abandoning)[ctype])
        )
        self.s = pd.DataFrame(
            {
                "session_idx": np.arange(n),
                "day": day,
                "cust": cust,
                "ctype": ctype,
                "sec": sec,
                "device": device,
                "source": source,
                "region": region,
                "n_views": n_views,
                "n_cart": n_cart,
                "has_cart": has_cart,
                "cart_value": np.round(cart_value, 2),
                "price_change": pchg,
                "promotion": promo,
                "mean_rating": rating,
                "ship_cost": ship_cost,
                "ship_days": ship_days,
                "ship_share": ship_share,
                # the planted friction terms of the purchase logit (ground truth for reason codes)
                "friction_price": np.where(has_cart, price_friction, 0.0),
                "friction_shipping": np.where(has_cart, ship_friction, 0.0),
                "p_purchase": p_buy,
                "purchased": purchased,
                "abandoned": abandoned,
                "consented": consented,
                "in_experiment": in_exp,
                "treatment": treatment,
                "returned_7d": returned,
                "return_day": np.where(returned, day + return_delay, -1),
                # the common random numbers of the 7-day outcome: under any arm the cart is bought
                # back iff u_return < p_conv of that arm, `return_delay` days later
                "u_return": u_ret,
                "return_delay": return_delay,
                "coupon": coupon,
                "reach_checkout": reach_checkout,
            }
        )
        for k, t in enumerate(schema.TREATMENTS):
            self.s[f"p_conv_{t}"] = np.where(abandoned, p_conv[:, k], np.nan)
        self.view_prod, self.view_start = view_prod, view_start
        self.cart_sess, self.cart_prod, self.cart_qty = cart_sess, cart_prod, cart_qty

    # ---- events ---------------------------------------------------------------------------
    def events(self) -> pd.DataFrame:
        """Build every session's ordered events, vectorised block by block."""
        rng, s = self.rng, self.s
        n = len(s)
        has_cart = s["has_cart"].to_numpy()
        ctype = s["ctype"].to_numpy()
        n_search = (rng.random(n) < np.where(ctype == 1, 0.8, 0.35)).astype(int)
        rec_imp = (rng.random(n) < 0.6).astype(int)
        rec_click = rec_imp * (rng.random(n) < np.array(self.tp.rec_click_rate)[ctype])
        n_cart = s["n_cart"].to_numpy()
        remove = (n_cart > 1) & (rng.random(n) < 0.15)
        checkout = s["reach_checkout"].to_numpy()
        coupon = s["coupon"].to_numpy()  # tried in the cart or at checkout
        purchased = s["purchased"].to_numpy()
        blocks: list[tuple[str, np.ndarray]] = [
            ("search", n_search),
            ("product_view", s["n_views"].to_numpy()),
            ("recommendation_impression", rec_imp),
            ("recommendation_click", rec_click.astype(int)),
            ("add_to_cart", n_cart),
            ("remove_from_cart", remove.astype(int)),
            ("view_cart", has_cart.astype(int)),
            ("begin_checkout", checkout.astype(int)),
            ("shipping_quote_shown", checkout.astype(int)),
            ("coupon_attempt", coupon.astype(int)),
            ("purchase", purchased.astype(int)),
        ]
        parts = []
        for order, (etype, counts) in enumerate(blocks):
            sess = np.repeat(np.arange(n), counts)
            pos = _segment_positions(counts)
            part = {"sess": sess, "block": np.full(len(sess), order), "pos": pos, "etype": etype}
            prod = np.full(len(sess), -1)
            qty = np.zeros(len(sess), dtype=int)
            if etype == "product_view":
                prod = self.view_prod[self.view_start[sess] + pos]
            elif etype == "recommendation_click":
                prod = rng.choice(self.cfg.n_products, len(sess), p=self.popularity)
            elif etype == "add_to_cart":
                prod, qty = self.cart_prod, self.cart_qty
            elif etype == "remove_from_cart":
                last = self.view_start[sess] + n_cart[sess] - 1
                prod, qty = self.view_prod[last], np.ones(len(sess), dtype=int)
            part["prod"], part["qty"] = prod, qty
            parts.append(pd.DataFrame(part))
        ev = pd.concat(parts, ignore_index=True).sort_values(
            ["sess", "block", "pos"], kind="stable"
        )
        sess = ev["sess"].to_numpy()
        seq, offset = _session_clock(sess, n, np.array(self.tp.dwell_seconds)[ctype[sess]], rng)
        day = s["day"].to_numpy()[sess]
        sec = s["sec"].to_numpy()[sess] + offset
        prod = ev["prod"].to_numpy()
        has_prod = prod >= 0
        p0 = np.where(has_prod, prod, 0)
        intraday = self.intraday[day, p0] & (sec >= self.intraday_sec[day, p0])
        unit = np.where(intraday, self.intraday_price[day, p0], self.price_window[day, p0])
        etype = ev["etype"].to_numpy()
        priced = has_prod & np.isin(
            etype, ["product_view", "add_to_cart", "remove_from_cart", "recommendation_click"]
        )
        quote = etype == "shipping_quote_shown"
        purchase = etype == "purchase"
        ts = self.day0 + day.astype("timedelta64[D]") + (sec * 1000).astype("timedelta64[ms]")
        cv = s["cart_value"].to_numpy()[sess]
        return pd.DataFrame(
            {
                "day": day,
                "sess": sess,
                "seq": seq,
                "ts": ts,
                "event_type": etype,
                "prod": prod,
                "quantity": np.where(
                    has_prod & np.isin(etype, ["add_to_cart", "remove_from_cart"]),
                    ev["qty"].to_numpy(),
                    0,
                ),
                "price": np.where(priced, unit, np.nan),
                "shipping_cost": np.where(quote, s["ship_cost"].to_numpy()[sess], np.nan),
                "delivery_days": np.where(quote, s["ship_days"].to_numpy()[sess], -1),
                "coupon": etype == "coupon_attempt",
                "order_value": np.where(
                    purchase, np.round(cv + s["ship_cost"].to_numpy()[sess], 2), np.nan
                ),
            }
        )

    def potential_returns(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """For every abandoned cart, the session in which it would be bought back (`returns`: the
        abandoned session), whichever arm it gets; only those the outcome makes happen land.
        Drawn from a stream of their own, so what one cart's decision changes leaves every other
        cart's return untouched. Arm-dependent fields (traffic source, shipping charged, order
        value) are set when the day lands."""
        rng, s, cfg = self.return_rng, self.s, self.cfg
        return_day = s["day"] + s["return_delay"]
        ret = s[s["abandoned"] & (return_day < cfg.days)].assign(
            return_day=return_day[s["abandoned"] & (return_day < cfg.days)]
        )
        m = len(ret)
        base = self.s_n
        rs = pd.DataFrame(
            {
                "session_idx": base + np.arange(m),
                "day": ret["return_day"].to_numpy(),
                "cust": ret["cust"].to_numpy(),
                "sec": rng.integers(7 * 3600, 22 * 3600, m),
                "device": self.pref_device[ret["cust"].to_numpy()],
                "source": 0,  # direct; an e-mail link when the cart was sent something
                "region": ret["region"].to_numpy(),
                "returns": ret["session_idx"].to_numpy(),
            }
        )
        # events: view_cart, begin_checkout, shipping_quote_shown, purchase, after re-adding items
        cart_mask = np.isin(self.cart_sess, ret["session_idx"].to_numpy())
        cs, cp, cq = self.cart_sess[cart_mask], self.cart_prod[cart_mask], self.cart_qty[cart_mask]
        new_idx = pd.Series(rs["session_idx"].to_numpy(), index=rs["returns"].to_numpy())
        adds = pd.DataFrame(
            {
                "sess": new_idx.loc[cs].to_numpy(),
                "block": 0,
                "pos": _segment_positions(np.bincount(cs)[np.bincount(cs) > 0]),
                "etype": "add_to_cart",
                "prod": cp,
                "qty": cq,
            }
        )
        tail = []
        for order, et in enumerate(
            ["view_cart", "begin_checkout", "shipping_quote_shown", "purchase"], start=1
        ):
            tail.append(
                pd.DataFrame(
                    {
                        "sess": rs["session_idx"].to_numpy(),
                        "block": order,
                        "pos": 0,
                        "etype": et,
                        "prod": -1,
                        "qty": 0,
                    }
                )
            )
        ev = pd.concat([adds, *tail], ignore_index=True).sort_values(
            ["sess", "block", "pos"], kind="stable"
        )
        sess = ev["sess"].to_numpy() - base
        seq, offset = _session_clock(sess, m, 25.0, rng)
        day = rs["day"].to_numpy()[sess]
        sec = rs["sec"].to_numpy()[sess] + offset
        prod = ev["prod"].to_numpy()
        p0 = np.where(prod >= 0, prod, 0)
        etype = ev["etype"].to_numpy()
        region = rs["region"].to_numpy()[sess]
        cart_value = ret["cart_value"].to_numpy()[sess]
        wcls = np.zeros(m, dtype=int)
        if len(cs):
            np.maximum.at(wcls, new_idx.loc[cs].to_numpy() - base, self.weight_idx[cp])
        ship = self.ship_cost[day, region, wcls[sess]]
        ts = self.day0 + day.astype("timedelta64[D]") + (sec * 1000).astype("timedelta64[ms]")
        events = pd.DataFrame(
            {
                "day": day,
                "sess": ev["sess"].to_numpy(),
                "seq": seq,
                "ts": ts,
                "event_type": etype,
                "prod": prod,
                "quantity": ev["qty"].to_numpy(),
                "price": np.where(etype == "add_to_cart", self.price_window[day, p0], np.nan),
                "shipping_cost": np.where(etype == "shipping_quote_shown", ship, np.nan),
                "delivery_days": np.where(
                    etype == "shipping_quote_shown", self.ship_days[day, region, wcls[sess]], -1
                ),
                "coupon": False,
                "order_value": np.nan,
                "returns": rs["returns"].to_numpy()[sess],
                # what the order is worth before the arm's discount or free shipping
                "cart_value": np.where(etype == "purchase", cart_value, np.nan),
                "quoted_shipping": np.where(
                    np.isin(etype, ["shipping_quote_shown", "purchase"]), ship, np.nan
                ),
            }
        )
        return rs, events

    # ---- reviews --------------------------------------------------------------------------
    def reviews(self, purchases: pd.DataFrame) -> pd.DataFrame:
        """Reviews of bought products; aspects and rating follow product quality and friction."""
        rng, cfg = self.rng, self.cfg
        pick = purchases[rng.random(len(purchases)) < cfg.review_rate]
        m = len(pick)
        delay = rng.integers(1, 15, m)
        day = pick["day"].to_numpy() + delay
        keep = day < cfg.days
        pick, day = pick[keep], day[keep]
        m = len(pick)
        prod = pick["prod"].to_numpy()
        rating = np.clip(
            np.round(
                self.mean_rating[prod]
                + rng.normal(0, 0.9, m)
                - 0.6 * (pick["ship_share"].to_numpy() > 0.15)
            ),
            1,
            5,
        ).astype(int)
        cat = np.array(cfg.categories)[self.cat_idx[prod]]
        texts = [
            _review_text(rng, int(r), c, float(sh), int(dd), float(pc))
            for r, c, sh, dd, pc in zip(
                rating,
                cat,
                pick["ship_share"],
                pick["ship_days"],
                pick["price_change"],
                strict=True,
            )
        ]
        sec = rng.integers(6 * 3600, 23 * 3600, m)
        ts = self.day0 + day.astype("timedelta64[D]") + (sec * 1000).astype("timedelta64[ms]")
        return pd.DataFrame(
            {
                "day": day,
                "prod": prod,
                "cust": pick["cust"].to_numpy(),
                "ts": ts,
                "rating": rating,
                "text": texts,
            }
        )


_ASPECT_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # aspect: (negative phrases, positive phrases)
    "shipping": (
        (
            "Shipping took forever to arrive.",
            "Delivery was slow and the shipping cost was far too high.",
            "It arrived a week late.",
            "Way too expensive to ship.",
        ),
        ("Fast delivery.", "Shipping was quick and free.", "Arrived earlier than expected."),
    ),
    "price": (
        (
            "Overpriced for what you get.",
            "Not worth the price.",
            "The price went up right after I looked.",
        ),
        ("Great value for the money.", "Good price, especially on sale.", "Worth every penny."),
    ),
    "size_fit": (
        ("Runs small, had to size up.", "The fit is off and too tight.", "Sizing is inconsistent."),
        ("Fits perfectly, true to size.", "The fit is great.", "Sizing was spot on."),
    ),
    "quality": (
        (
            "Poor quality, fell apart after one wash.",
            "Cheap material and bad stitching.",
            "Broke within days.",
        ),
        (
            "Excellent quality and well made.",
            "The material feels premium.",
            "Very sturdy and durable.",
        ),
    ),
    "returns": (
        (
            "Returning it was a hassle.",
            "The return process is a nightmare.",
            "Still waiting for my refund.",
        ),
        ("Easy return and quick refund.", "Returns were simple.", "Hassle-free exchange."),
    ),
    "service": (
        (
            "Customer service never answered.",
            "Support was rude and unhelpful.",
            "Nobody replied to my emails.",
        ),
        (
            "Customer service was very helpful.",
            "Support sorted it out quickly.",
            "Friendly and helpful staff.",
        ),
    ),
}
_OPENERS = (
    ("Really disappointed.", "Not happy.", "Would not buy again."),
    ("Love it!", "Very happy.", "Would buy again."),
)


def _review_text(
    rng: np.random.Generator,
    rating: int,
    category: str,
    ship_share: float,
    ship_days: int,
    price_change: float,
) -> str:
    """Free text in which the friction aspects behind a rating appear."""
    negative = rating <= 3
    weights = {
        "shipping": 1.0 + 8 * ship_share + 0.3 * max(ship_days - 3, 0),
        "price": 1.0 + 10 * max(price_change, 0),
        "size_fit": 2.0 if category in ("apparel", "shoes") else 0.2,
        "quality": 1.5,
        "returns": 0.6,
        "service": 0.5,
    }
    names = list(weights)
    p = np.array([weights[a] for a in names])
    k = 1 + int(rng.random() < 0.5)
    aspects = rng.choice(len(names), k, replace=False, p=p / p.sum())
    sentences = [str(rng.choice(_OPENERS[0 if negative else 1]))]
    for a in aspects:
        sentences.append(str(rng.choice(_ASPECT_PHRASES[names[a]][0 if negative else 1])))
    return " ".join(sentences)


def _inject_bad_rows(
    events: pd.DataFrame,
    kinds: Sequence[str],
    rate: float,
    rng: np.random.Generator,
    session_start: np.ndarray,
) -> tuple[pd.DataFrame, list[str], list[dict[str, object]]]:
    """Give `rate` of the event rows exactly one defect each (kinds in turn).

    Returns the rows left well-formed, the defective lines (a duplicate is a copy of a row that
    stays), and a log of what was injected.
    """
    n = len(events)
    n_bad = int(round(rate * n))
    if n_bad == 0 or not kinds:
        return events, [], []
    order = rng.permutation(n)
    priced = ~np.isnan(events["price"].to_numpy())
    has_prod = events["product_id"].notna().to_numpy()
    taken = np.zeros(n, dtype=bool)
    removed = np.zeros(n, dtype=bool)
    log: list[dict[str, object]] = []
    lines: list[str] = []
    for j in range(n_bad):
        kind = kinds[j % len(kinds)]
        ok = ~taken
        if kind == "negative_price":
            ok &= priced
        elif kind == "unknown_product":
            ok &= has_prod
        cand = order[ok[order]]
        if len(cand) == 0:
            continue
        i = int(cand[0])
        taken[i] = True
        rec = {k: (None if pd.isna(v) else v) for k, v in events.iloc[i].to_dict().items()}
        rec = json.loads(json.dumps(rec, default=int))  # numpy scalars -> JSON types
        removed[i] = kind != "duplicate"
        if kind == "missing_id":
            rec.pop("event_id")
        elif kind == "negative_price":
            rec["price"] = -abs(rec["price"]) - 0.01
        elif kind == "unknown_product":
            rec["product_id"] = f"P-UNKNOWN-{j}"
        elif kind == "unknown_session":
            rec["session_id"] = f"S-UNKNOWN-{j}"
        elif kind == "out_of_order":
            early = session_start[i] - np.timedelta64(int(rng.integers(5, 120)), "m")
            rec["ts"] = str(np.datetime_as_string(early, unit="ms"))
        elif kind == "future_timestamp":
            late = np.datetime64(rec["ts"]) + np.timedelta64(400, "D")
            rec["ts"] = str(np.datetime_as_string(late, unit="ms"))
        line = json.dumps(rec)
        lines.append(line[: len(line) // 2] if kind == "malformed_json" else line)
        log.append(
            {"event_id": events["event_id"].iat[i], "kind": kind, "rule": BAD_ROW_RULES[kind]}
        )
    return events[~removed].reset_index(drop=True), lines, log


@dataclass
class _World:
    """What the simulation generated, before it is cut into landing files and truth: every
    session (first visits and every potential return), every event, the reviews, with their
    public ids. Nothing in it depends on which arm a cart gets."""

    sim: _Sim
    # first visits and potential returns: session_idx, day, cust, sec, device, source, region,
    # returns (the abandoned session a return buys back; -1 for a first visit)
    sessions: pd.DataFrame
    events: pd.DataFrame  # sorted by day, session, seq; with session_id, event_id, product_id
    reviews: pd.DataFrame
    session_ids: np.ndarray  # by session_idx
    session_start: np.ndarray  # by session_idx (datetime64)


@dataclass
class _Outcomes:
    """The arm each abandoned cart got and who chose it (first visits, by session_idx); the
    7-day outcome follows from the common random numbers."""

    treatment: np.ndarray  # index into schema.TREATMENTS; 0 (control) when nobody acted
    chosen_by: np.ndarray  # "" when nobody decided
    propensity: np.ndarray
    policy_version: np.ndarray
    model_version: np.ndarray
    decided_at: np.ndarray  # datetime64[ms]; NaT: an hour after the session started

    @classmethod
    def experiment(cls, s: pd.DataFrame) -> _Outcomes:
        """The storefront's randomised experiment (`experiment_rate` of consenting abandoners, a
        uniformly random arm each, control included)."""
        n = len(s)
        exp = s["in_experiment"].to_numpy()
        return cls(
            treatment=np.where(exp, s["treatment"].to_numpy(), 0),
            chosen_by=np.where(exp, "experiment", "").astype(object),
            propensity=np.where(exp, 1.0 / len(schema.TREATMENTS), np.nan),
            policy_version=np.full(n, None, dtype=object),
            model_version=np.full(n, None, dtype=object),
            decided_at=np.full(n, np.datetime64("NaT"), dtype="datetime64[ms]"),
        )

    def returned(self, s: pd.DataFrame) -> np.ndarray:
        """Whether each cart is bought back within 7 days under the arm it got."""
        p = s[[f"p_conv_{t}" for t in schema.TREATMENTS]].to_numpy()
        chance = p[np.arange(len(s)), self.treatment]
        return s["abandoned"].to_numpy() & (s["u_return"].to_numpy() < np.nan_to_num(chance))


def simulate(cfg: StorefrontConfig, progress: Callable[[str], None] | None = None) -> Storefront:
    """Simulate the storefront in memory, the shop's randomised experiment deciding every arm
    (see `Shop` for a storefront that acts on decisions made day by day, and
    `write_storefront` to land it as files)."""
    shop = Shop(cfg, progress)
    return shop.storefront(range(cfg.days))


class Shop:
    """A storefront that acts: it lands one day at a time and applies the arms chosen for that
    day's abandoned carts (by the daily plan, its exploration, the holdout, the scoring service,
    or its own randomised experiment), each cart's 7-day outcome drawn from that shopper's true
    probability under the chosen arm (common random numbers: the same cart, the same luck).

    A day's carts are decided after the day lands and before the next one does; their returns
    land on later days and their outcomes in the day's interventions feed."""

    def __init__(self, cfg: StorefrontConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.say = progress or (lambda _msg: None)
        self.world = _generate(cfg, self.say)
        s = self.world.sim.s
        self.outcomes = _Outcomes.experiment(s)
        self.session_idx = pd.Series(
            np.arange(len(s)), index=self.world.session_ids[: len(s)], dtype=np.int64
        )
        self.landed = -1  # the last day landed
        self.not_applied = 0  # decisions of the last `act` left alone (the cart was bought)
        self._tables: dict[int, dict[str, pd.DataFrame]] = {}
        self._bad: dict[str, tuple[list[str], list[dict[str, object]]]] = {}

    def day_tables(self, i: int) -> dict[str, pd.DataFrame]:
        """Day `i`'s landing tables but the interventions feed (its defective event lines:
        `bad_lines(day)`). Days land in order; landing a day closes the decisions of the days
        before it."""
        if i in self._tables:
            return dict(self._tables[i])
        if i != self.landed + 1 or i >= self.cfg.days:
            raise ValueError(f"day {i} cannot land: the last day landed is {self.landed}")
        tables, bad, log = _land_day(self.cfg, self.world, i, self.outcomes)
        self._tables[i] = tables
        self._bad[self.cfg.day(i).isoformat()] = (bad, log)
        self.landed = i
        return dict(tables)

    def bad_lines(self, day: str) -> list[str]:
        return self._bad.get(day, ([], []))[0]

    def act(self, decisions: pd.DataFrame) -> int:
        """Apply decisions (session_id, arm, chosen_by, propensity, and optionally
        policy_version, model_version, decided_at) to the carts of the last day landed; returns
        how many were applied. A cart that was in fact bought is left alone, as a shop would (the
        pipeline can miss a purchase whose event line was defective): `not_applied` counts them.
        Carts already decided, unknown arms, choosers and sessions are refused with an error."""
        self.not_applied = 0
        if decisions.empty:
            return 0
        s = self.world.sim.s
        first = decisions["session_id"].isin(self.session_idx.index)
        unknown = ~first & ~decisions["session_id"].isin(self.world.session_ids)
        if unknown.any():
            raise ValueError(
                f"unknown sessions {decisions.loc[unknown, 'session_id'].head(3).tolist()}"
            )
        # a return visit buys its cart back: nothing to act on (its purchase line may have been
        # defective, so the pipeline saw an open cart)
        returns = int((~first).sum())
        decisions = decisions[first]
        idx = self.session_idx.loc[decisions["session_id"]].to_numpy()
        arms = decisions["arm"].map({t: k for k, t in enumerate(schema.TREATMENTS)})
        if arms.isna().any():
            raise ValueError(f"unknown arms {sorted(set(decisions.loc[arms.isna(), 'arm']))}")
        bad_by = set(decisions["chosen_by"]) - set(schema.CHOOSERS)
        if bad_by:
            raise ValueError(
                f"unknown choosers {sorted(bad_by)}; expected some of {schema.CHOOSERS}"
            )
        p = decisions["propensity"].to_numpy(dtype=float)
        if not np.all((p > 0) & (p <= 1)):
            raise ValueError("propensities must be in (0, 1]")
        day = s["day"].to_numpy()[idx]
        late = day != self.landed
        if late.any():
            raise ValueError(
                f"{int(late.sum())} decisions are not for day {self.landed}, the last day landed:"
                " a day's carts are decided after it lands and before the next one does"
            )
        taken = self.outcomes.chosen_by[idx] != ""
        if taken.any():
            raise ValueError(f"{int(taken.sum())} carts were already decided (experiment or twice)")
        open_ = s["abandoned"].to_numpy()[idx]
        self.not_applied = returns + int((~open_).sum())
        decisions, idx, arms, p = decisions[open_], idx[open_], arms[open_], p[open_]
        o = self.outcomes
        o.treatment[idx] = arms.to_numpy(dtype=int)
        o.chosen_by[idx] = decisions["chosen_by"].to_numpy()
        o.propensity[idx] = p
        for col in ("policy_version", "model_version"):
            if col in decisions:
                getattr(o, col)[idx] = decisions[col].astype(object).to_numpy()
        if "decided_at" in decisions:
            o.decided_at[idx] = pd.to_datetime(decisions["decided_at"]).to_numpy(
                dtype="datetime64[ms]"
            )
        return len(idx)

    def interventions(self, i: int) -> pd.DataFrame:
        """Day `i`'s interventions feed: every decided cart of the day, its arm, who chose it
        with what propensity, and its 7-day outcome."""
        return _interventions(self.cfg, self.world, i, self.outcomes)

    def truth_sessions(self) -> pd.DataFrame:
        """Every first visit's truth with the arm it got so far (tests and benchmarks only)."""
        return _truth(self.cfg, self.world, self.outcomes)[1]

    def storefront(self, days: Sequence[int] | range | None = None) -> Storefront:
        """What has landed (or, with `days`, lands now: those days in order) with the truth as
        decided so far."""
        landing: dict[str, dict[str, pd.DataFrame]] = {}
        for i in days if days is not None else range(self.landed + 1):
            if i > self.landed:
                self.say(f"landing {self.cfg.day(i)}")
            tables = self.day_tables(i)
            tables["interventions"] = self.interventions(i)
            landing[self.cfg.day(i).isoformat()] = tables
        self.say("ground truth")
        truth_customers, truth_sessions, effects = _truth(self.cfg, self.world, self.outcomes)
        bad_log = [row for _, log in self._bad.values() for row in log]
        return Storefront(
            config=self.cfg,
            landing=landing,
            bad_event_lines={d: self.bad_lines(d) for d in landing},
            truth_customers=truth_customers,
            truth_sessions=truth_sessions,
            truth_bad_rows=pd.DataFrame(
                bad_log, columns=["day", "table", "event_id", "kind", "rule"]
            ),
            truth_effects=effects,
        )


def _generate(cfg: StorefrontConfig, say: Callable[[str], None]) -> _World:
    """Draw the catalogue, customers, sessions, events and reviews (one random stream), and
    every abandoned cart's potential return (a stream of its own)."""
    sim = _Sim(cfg, say)
    say("catalogue, prices and shipping")
    sim.products()
    sim.shipping()
    if cfg.population_seed is not None:
        sim.rng = np.random.default_rng([cfg.seed, cfg.population_seed])
    say("customers")
    sim.customers()
    say("sessions and outcomes")
    sim.sessions()
    say("events")
    ev = sim.events()
    rs, rev = sim.potential_returns()
    s = sim.s
    sess_all = pd.concat(
        [
            s[["session_idx", "day", "cust", "sec", "device", "source", "region"]].assign(
                returns=-1
            ),
            rs,
        ],
        ignore_index=True,
    )
    events = pd.concat([ev.assign(returns=-1), rev], ignore_index=True).sort_values(
        ["day", "sess", "seq"], kind="stable"
    )
    sess_ids = np.char.add("S", np.char.zfill(sess_all["session_idx"].to_numpy().astype(str), 9))
    sess_start = (
        sim.day0
        + sess_all["day"].to_numpy().astype("timedelta64[D]")
        + (sess_all["sec"].to_numpy() * 1000).astype("timedelta64[ms]")
    )
    sess_id_of = sess_ids  # session_idx == position
    ev_sess = events["sess"].to_numpy()
    events = events.assign(
        session_id=sess_id_of[ev_sess],
        event_id=np.char.add(
            np.char.add("E", sess_id_of[ev_sess].astype(str)),
            np.char.add("-", events["seq"].to_numpy().astype(str)),
        ),
        product_id=np.where(
            events["prod"].to_numpy() >= 0,
            sim.product_ids[np.maximum(events["prod"].to_numpy(), 0)],
            None,
        ),
    )
    say("reviews")
    purch = s[s["purchased"]]
    cart_buy = pd.DataFrame({"sess": sim.cart_sess, "prod": sim.cart_prod})
    purchases = cart_buy.merge(
        purch[["session_idx", "day", "cust", "ship_share", "ship_days", "price_change"]],
        left_on="sess",
        right_on="session_idx",
    )
    reviews = sim.reviews(purchases)
    reviews["review_id"] = [f"R{sim.cfg.seed}-{i:08d}" for i in range(len(reviews))]

    return _World(sim, sess_all, events, reviews, sess_ids, sess_start)


_DISCOUNT: dict[int, float] = {3: 0.05, 4: 0.10}  # schema.TREATMENTS index -> share off
_FREE_SHIPPING = 2


def _land_day(
    cfg: StorefrontConfig, world: _World, i: int, outcomes: _Outcomes
) -> tuple[dict[str, pd.DataFrame], list[str], list[dict[str, object]]]:
    """Day `i`'s landing tables (but the interventions feed) as the shop's systems would export
    them, with the returns the decided arms made happen, the defective event lines injected into
    them (a stream of the day's own) and the log of those defects."""
    sim, reviews = world.sim, world.reviews
    sess_all, sess_ids, sess_start = world.sessions, world.session_ids, world.session_start
    devices = np.array(schema.DEVICES)
    sources = np.array(schema.TRAFFIC_SOURCES)
    regions = np.array(cfg.regions)
    cust_ids = sim.cust_ids
    d = cfg.day(i).isoformat()
    returned = outcomes.returned(sim.s)
    treat = outcomes.treatment

    def happens(returns: np.ndarray) -> np.ndarray:
        """First visits, and the returns whose cart the arm it got brought back."""
        return (returns < 0) | returned[np.maximum(returns, 0)]

    tables: dict[str, pd.DataFrame] = {}
    new = (sim.signup_day == i) | ((i == 0) & (sim.signup_day <= 0))
    tables["customers"] = pd.DataFrame(
        {
            "customer_id": cust_ids[new],
            "region": regions[sim.cust_region[new]],
            "signup_date": (sim.day0 + sim.signup_day[new].astype("timedelta64[D]"))
            .astype("datetime64[s]")
            .astype("datetime64[ms]"),
            "marketing_consent": sim.consent[new],
            "preferred_device": devices[sim.pref_device[new]],
        }
    )
    tables["customers"]["signup_date"] = pd.to_datetime(tables["customers"]["signup_date"]).dt.date
    tables["products"] = pd.DataFrame(
        {
            "product_id": sim.product_ids,
            "category": np.array(cfg.categories)[sim.cat_idx],
            "list_price": sim.list_price,
            "price": sim.price_window[i],
            "on_promotion": sim.promo_window[i],
            "weight_class": np.array(schema.WEIGHT_CLASSES)[sim.weight_idx],
        }
    )
    rr, ww = np.meshgrid(np.arange(len(cfg.regions)), np.arange(4), indexing="ij")
    tables["shipping_quotes"] = pd.DataFrame(
        {
            "region": regions[rr.ravel()],
            "weight_class": np.array(schema.WEIGHT_CLASSES)[ww.ravel()],
            "shipping_cost": sim.ship_cost[i].ravel(),
            "delivery_days": sim.ship_days[i].ravel().astype("int32"),
        }
    )
    day_sess = sess_all[(sess_all["day"].to_numpy() == i) & happens(sess_all["returns"].to_numpy())]
    pos = day_sess["session_idx"].to_numpy()
    src_arm = np.where(day_sess["returns"] >= 0, treat[np.maximum(day_sess["returns"], 0)], 0)
    source = np.where(src_arm > 0, 2, day_sess["source"].to_numpy())  # the e-mail's link
    tables["sessions"] = pd.DataFrame(
        {
            "session_id": sess_ids[pos],
            "customer_id": cust_ids[day_sess["cust"].to_numpy()],
            "started_at": sess_start[pos].astype("datetime64[ms]"),
            "device": devices[day_sess["device"].to_numpy()],
            "traffic_source": sources[source],
            "region": regions[day_sess["region"].to_numpy()],
        }
    )
    ev = world.events
    day_ev = ev[(ev["day"].to_numpy() == i) & happens(ev["returns"].to_numpy())]
    arm = np.where(day_ev["returns"] >= 0, treat[np.maximum(day_ev["returns"], 0)], 0)
    etype = day_ev["event_type"].to_numpy()
    returning = day_ev["returns"].to_numpy() >= 0
    ship = np.where(arm == _FREE_SHIPPING, 0.0, day_ev["quoted_shipping"].to_numpy())
    off = pd.Series(arm).map(_DISCOUNT).fillna(0.0).to_numpy()
    shipping_cost = np.where(
        returning & (etype == "shipping_quote_shown"), ship, day_ev["shipping_cost"].to_numpy()
    )
    order_value = np.where(
        returning & (etype == "purchase"),
        np.round(day_ev["cart_value"].to_numpy() * (1 - off) + ship, 2),
        day_ev["order_value"].to_numpy(),
    )
    quantity = day_ev["quantity"].to_numpy()
    out = pd.DataFrame(
        {
            "event_id": day_ev["event_id"].to_numpy(),
            "session_id": day_ev["session_id"].to_numpy(),
            "seq": day_ev["seq"].to_numpy(),
            "ts": _iso(day_ev["ts"].to_numpy()),
            "event_type": etype,
            "product_id": day_ev["product_id"].to_numpy(),
            "quantity": pd.array(np.where(quantity > 0, quantity, 0), dtype="Int64"),
            "price": day_ev["price"].to_numpy(),
            "shipping_cost": shipping_cost,
            "delivery_days": pd.array(day_ev["delivery_days"].to_numpy(), dtype="Int64"),
            "coupon_code": pd.Series(day_ev["coupon"].to_numpy())
            .map({True: "SAVE10", False: None})
            .to_numpy(),
            "order_value": order_value,
        }
    )
    out.loc[out["quantity"] == 0, "quantity"] = pd.NA
    out.loc[out["delivery_days"] < 0, "delivery_days"] = pd.NA
    bad_lines: list[str] = []
    log: list[dict[str, object]] = []
    if cfg.bad_row_rate > 0:
        start_by_sess = pd.Series(sess_start, index=sess_ids)
        starts = start_by_sess.loc[out["session_id"].to_numpy()].to_numpy()
        rng = np.random.default_rng([cfg.seed, cfg.population_seed or 0, 2, i])
        out, bad_lines, log = _inject_bad_rows(
            out, cfg.bad_row_kinds, cfg.bad_row_rate, rng, starts
        )
        for row in log:
            row.update({"day": d, "table": "events"})
    tables["events"] = out
    rv = reviews[reviews["day"] == i]
    tables["reviews"] = pd.DataFrame(
        {
            "review_id": rv["review_id"].to_numpy(),
            "product_id": sim.product_ids[rv["prod"].to_numpy()],
            "customer_id": cust_ids[rv["cust"].to_numpy()],
            "ts": _iso(rv["ts"].to_numpy()),
            "rating": rv["rating"].to_numpy(),
            "text": rv["text"].to_numpy(),
        }
    )
    return tables, bad_lines, log


def _interventions(cfg: StorefrontConfig, world: _World, i: int, o: _Outcomes) -> pd.DataFrame:
    """Day `i`'s decided carts with the arm, who chose it, its propensity, the versions behind
    it, its cost and its 7-day outcome (exported once the 7 days have closed)."""
    s, sess_ids, sess_start = world.sim.s, world.session_ids, world.session_start
    m = (s["day"].to_numpy() == i) & (o.chosen_by != "")
    idx = np.flatnonzero(m)
    treat = o.treatment[idx]
    conv = o.returned(s)[idx]
    cv = s["cart_value"].to_numpy()[idx]
    off = pd.Series(treat).map(_DISCOUNT).fillna(0.0).to_numpy()
    cost = np.where(treat == 1, 0.05, 0.0) + conv * (
        np.where(treat == _FREE_SHIPPING, s["ship_cost"].to_numpy()[idx], 0.0) + off * cv
    )
    at = o.decided_at[idx]
    at = np.where(np.isnat(at), sess_start[idx] + np.timedelta64(1, "h"), at)
    return pd.DataFrame(
        {
            "assignment_id": np.char.add("A", sess_ids[idx]),
            "session_id": sess_ids[idx],
            "customer_id": world.sim.cust_ids[s["cust"].to_numpy()[idx]],
            "assigned_at": at.astype("datetime64[ms]"),
            "treatment": np.array(schema.TREATMENTS)[treat],
            "cost": np.round(cost, 2),
            "converted_7d": conv,
            "revenue_7d": np.round(np.where(conv, cv * (1 - off), 0.0), 2),
            "chosen_by": o.chosen_by[idx].astype(str),
            "propensity": o.propensity[idx],
            "policy_version": o.policy_version[idx],
            "model_version": o.model_version[idx],
        }
    )


def _truth(
    cfg: StorefrontConfig, world: _World, outcomes: _Outcomes
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
    """The ground truth the tests read: each customer's latent type, each session's outcomes and
    the arm it got, and the parameters of the effects."""
    sim, sess_ids = world.sim, world.session_ids
    s = sim.s.assign(
        treatment=outcomes.treatment,
        in_experiment=outcomes.chosen_by == "experiment",
        chosen_by=outcomes.chosen_by.astype(str),
        returned_7d=outcomes.returned(sim.s),
    )
    s["return_day"] = np.where(s["returned_7d"], s["day"] + s["return_delay"], -1)
    devices, regions, cust_ids = np.array(schema.DEVICES), np.array(cfg.regions), sim.cust_ids

    truth_customers = pd.DataFrame(
        {
            "customer_id": cust_ids,
            "latent_type": np.array(TYPE_NAMES)[sim.cust_type],
            "region": regions[sim.cust_region],
            "signup_day": sim.signup_day,
            "marketing_consent": sim.consent,
        }
    )
    ts = s.copy()
    ts.insert(0, "session_id", sess_ids[: len(s)])
    ts.insert(1, "customer_id", cust_ids[s["cust"].to_numpy()])
    ts["date"] = [cfg.day(int(x)).isoformat() for x in s["day"]]
    ts["latent_type"] = np.array(TYPE_NAMES)[s["ctype"].to_numpy()]
    ts["treatment"] = np.array(schema.TREATMENTS)[s["treatment"].to_numpy()]
    ts["benign"] = ts["abandoned"] & ts["returned_7d"]
    ts["harmful"] = ts["abandoned"] & ~ts["returned_7d"]
    ts["region"] = regions[s["region"].to_numpy()]
    ts["device"] = devices[s["device"].to_numpy()]
    ts = ts.drop(columns=["cust", "ctype", "source"])
    effects = {
        "types": list(TYPE_NAMES),
        "type_params": dataclasses.asdict(cfg.types),
        "treatments": list(schema.TREATMENTS),
        "purchase_logit_offset": sim.purchase_offset,
        "return_logit_offset": sim.return_offset,
        "mobile_purchase_logit": -0.3,
        "free_shipping_effect_scale": "clip(shipping_share / 0.1, 0.3, 2.0)",
        "discount_effect_scale": "(0.5 + 1.5 * coupon tried) * clip(1 + 5 * max(price_change, 0), 1, 2)",
        "drift": [dataclasses.asdict(d) for d in cfg.drift],
    }
    return truth_customers, ts, effects


# The tests' demo storefront: twice the default traffic, so 14 days of randomised experiment log
# ~10k carts, about what the uplift model needs to rank effects (see the uplift tests).
DEMO_STOREFRONT = StorefrontConfig(sessions_per_day=3000, n_customers=12000)
# What `cartintel demo` lands: the same shop at the traffic where 14 days of experiment (~25k
# logged carts) let the uplift gate prove a policy, so the closed loop can run; at ~10k carts no
# policy's value can be told from 0 (BENCHMARKS.md: decision quality by size of the log).
DEMO_RUN = dataclasses.replace(DEMO_STOREFRONT, sessions_per_day=7000, n_customers=28000)


def _write_tables(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    tables: dict[str, pd.DataFrame],
    bad_lines: list[str] | None = None,
) -> None:
    """Write landing tables into one day's folder (defective event lines appended)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        spec = schema.TABLES_BY_NAME[name]
        path = folder / spec.landing_file
        if spec.landing_format == "parquet":
            frame.to_parquet(path, index=False)
            continue
        # DuckDB writes JSON lines ~5x faster than pandas, in the frame's row order
        con.register("_rows", frame)
        con.execute(f"COPY (SELECT * FROM _rows) TO '{path}' (FORMAT json)")
        con.unregister("_rows")
        if name == "events" and bad_lines:
            with open(path, "a", encoding="utf-8") as fh:
                fh.writelines(line + "\n" for line in bad_lines)


def write_storefront(store: Storefront, out_dir: Path | str) -> dict[str, Path]:
    """Land the storefront: `<out>/landing/<day>/<table>.<ext>` and `<out>/truth/` (tests only)."""
    out = Path(out_dir)
    landing, truth = out / "landing", out / "truth"
    con = duckdb.connect()
    try:
        for day, tables in store.landing.items():
            _write_tables(con, landing / day, tables, store.bad_event_lines[day])
    finally:
        con.close()
    write_truth(store, truth)
    return {"landing": landing, "truth": truth}


def write_truth(store: Storefront, truth: Path) -> None:
    """The ground truth only tests and benchmarks read."""
    truth.mkdir(parents=True, exist_ok=True)
    store.truth_customers.to_parquet(truth / "customers.parquet", index=False)
    store.truth_sessions.to_parquet(truth / "sessions.parquet", index=False)
    store.truth_bad_rows.to_parquet(truth / "bad_rows.parquet", index=False)
    (truth / "effects.json").write_text(json.dumps(store.truth_effects, indent=2, default=str))
    (truth / "config.json").write_text(store.config.to_json())


def land_day(shop: Shop, i: int, landing: Path | str) -> Path:
    """Land day `i` of an acting shop (every table but the interventions feed, which
    `land_interventions` writes once the day's carts are decided); returns the day's folder."""
    folder = Path(landing) / shop.cfg.day(i).isoformat()
    con = duckdb.connect()
    try:
        _write_tables(con, folder, shop.day_tables(i), shop.bad_lines(folder.name))
    finally:
        con.close()
    return folder


def land_interventions(shop: Shop, i: int, landing: Path | str) -> Path:
    """Write day `i`'s interventions feed: its decided carts and their outcomes."""
    folder = Path(landing) / shop.cfg.day(i).isoformat()
    con = duckdb.connect()
    try:
        _write_tables(con, folder, {"interventions": shop.interventions(i)})
    finally:
        con.close()
    return folder / schema.TABLES_BY_NAME["interventions"].landing_file


def parse_drift(spec: str) -> DriftSpec:
    """Parse `kind:start_day:magnitude[:region]`, e.g. `shipping_cost:7:0.5:DE`."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"drift spec {spec!r} is not kind:start_day:magnitude[:region]")
    return DriftSpec(
        start_day=int(parts[1]),
        kind=parts[0],
        magnitude=float(parts[2]),
        region=parts[3] if len(parts) == 4 else None,
    )


def parse_date(text: str) -> date:
    return datetime.strptime(text, "%Y-%m-%d").date()
