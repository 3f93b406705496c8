"""The economics of an intervention.

Sending intervention a to a cart of value v with shipping cost s, when p0 is the chance it is
bought anyway and p_a the chance with a (p_a = p0 + predicted uplift):
    expected cost          = send cost + p_a * (discount * v + free shipping * s)
    incremental margin     = (p_a - p0) * v * margin rate - p_a * (discount * v + free shipping * s)
                             - send cost
so a discount given to someone who would have bought anyway counts against it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cartintel_assets.decisions.catalogue import Intervention

ACTION_COLUMNS: tuple[str, ...] = (
    "cart",
    "arm",
    "intervention_id",
    "discount",
    "p_treated",
    "p_baseline",
    "incremental_conversion",
    "expected_cost",
    "incremental_margin",
)


def _paid_if_bought(item: Intervention, value: np.ndarray, shipping: np.ndarray) -> np.ndarray:
    """What an intervention costs on a cart that is bought: the discount and the shipping."""
    return item.discount * value + item.free_shipping * shipping


def action_table(
    carts: pd.DataFrame,
    baseline: np.ndarray,
    effects: pd.DataFrame | Mapping[str, np.ndarray],
    catalogue: list[Intervention],
    margin_rate: float,
) -> pd.DataFrame:
    """Every (cart, intervention) pair: the chance of buying with it, the incremental conversion,
    the expected cost and the incremental margin (see the module docstring). `carts` needs
    cart_value and shipping_cost; `effects` one column per arm, aligned with `carts`."""
    return pd.DataFrame(
        option_columns(
            np.asarray(carts["cart_value"], dtype=float),
            np.asarray(carts["shipping_cost"], dtype=float),
            baseline,
            effects,
            catalogue,
            margin_rate,
        ),
        columns=list(ACTION_COLUMNS),
    )


def expected_margins(
    carts: pd.DataFrame,
    baseline: np.ndarray,
    effects: pd.DataFrame,
    catalogue: list[Intervention],
    margin_rate: float,
    control: str = "control",
) -> pd.DataFrame:
    """Each cart's expected margin without intervention (`control`) and under every arm (net of
    its cost): the columns a policy picks from, and the model a doubly robust estimate uses."""
    base = np.clip(baseline, 0, 1) * carts["cart_value"].to_numpy(dtype=float) * margin_rate
    out = pd.DataFrame({control: base})
    for arm, rows in action_table(carts, baseline, effects, catalogue, margin_rate).groupby("arm"):
        out[arm] = rows.sort_values("cart", kind="stable")["incremental_margin"].to_numpy() + base
    return out


def option_columns(
    cart_value: np.ndarray,
    shipping_cost: np.ndarray,
    baseline: np.ndarray,
    effects: pd.DataFrame | Mapping[str, np.ndarray],
    catalogue: list[Intervention],
    margin_rate: float,
) -> dict[str, np.ndarray]:
    """`action_table` as numpy columns (ACTION_COLUMNS), the options of cart 0, then 1, ... per
    catalogue entry."""
    v = np.asarray(cart_value, dtype=float)
    s = np.nan_to_num(np.asarray(shipping_cost, dtype=float))
    p0 = np.clip(np.asarray(baseline, dtype=float), 0, 1)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ACTION_COLUMNS}
    n = len(v)
    for item in catalogue:
        if item.arm not in effects:
            continue
        pa = np.clip(p0 + np.asarray(effects[item.arm], dtype=float), 0, 1)
        if_bought = _paid_if_bought(item, v, s)
        for k, col in (
            ("cart", np.arange(n)),
            ("arm", np.full(n, item.arm, dtype=object)),
            ("intervention_id", np.full(n, item.id, dtype=object)),
            ("discount", np.full(n, item.discount, dtype=float)),
            ("p_treated", pa),
            ("p_baseline", p0),
            ("incremental_conversion", pa - p0),
            ("expected_cost", item.send_cost + pa * if_bought),
            ("incremental_margin", (pa - p0) * v * margin_rate - pa * if_bought - item.send_cost),
        ):
            parts[k].append(col)
    if not parts["cart"]:  # no usable intervention: no option for any cart
        return {
            c: np.array([], dtype=object if c in ("arm", "intervention_id") else float)
            for c in ACTION_COLUMNS
        }
    return {k: np.concatenate(v) for k, v in parts.items()}


def realised_margin(
    log: pd.DataFrame, catalogue: list[Intervention], margin_rate: float
) -> np.ndarray:
    """The margin each logged cart actually made under its arm (control: no cost)."""
    v = log["cart_value"].to_numpy(dtype=float)
    s = np.nan_to_num(log["shipping_cost"].to_numpy(dtype=float))
    y = log["converted_7d"].to_numpy(dtype=float)
    arm = log["treatment"].to_numpy()
    out = y * v * margin_rate
    for item in catalogue:
        m = arm == item.arm
        out[m] -= item.send_cost + y[m] * _paid_if_bought(item, v[m], s[m])
    return out
