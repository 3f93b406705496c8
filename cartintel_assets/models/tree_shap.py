"""Exact TreeSHAP contributions of an XGBoost model, from tables built once per model.

XGBoost's `pred_contribs` runs the recursive TreeSHAP algorithm (Lundberg et al. 2018) for every
row: O(leaves · depth²) per tree, ~0.6 ms per cart on the demo's risk model and ~1 ms on the
1M-session one, most of the scoring service's time per cart in a batch. The values it computes
are the Shapley values of a product game per leaf: with U the distinct features on the leaf's
path, z_j the share of the training cover that follows the path at the splits on j, and o_j
whether the row follows the path at all of them (0 or 1),

    v(S) = leaf value · prod_{j in S} o_j · prod_{j in U \\ S} z_j.

A leaf's contributions depend on the row only through the bit pattern of o over U (at most
2^depth patterns), so they are tabulated once per leaf (as in Fast TreeSHAP v2, Yang 2021).
Per row, what is left is one comparison per split on the leaf's path and one table read per
feature of the leaf, compiled with numba and run leaf by leaf for all rows of a batch at once.
Results equal `pred_contribs` to float32 rounding (XGBoost computes in float32, the tables are
float32): `test_tree_shap` holds them to it on trained models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import xgboost as xgb

from cartintel_assets.models.forest import covered_trees

# tables beyond this many entries (deep trees: 2^depth patterns per leaf) are not built
MAX_TABLE_ENTRIES = 50_000_000


@dataclass(frozen=True)
class TreeShap:
    """The tabulated contributions of one booster's trees (up to an iteration), laid out leaf
    after leaf (only leaves below at least one split: a lone root adds to the bias only)."""

    n_features: int
    bias: float  # the expected margin: base score plus each tree's cover-weighted mean
    # the splits on each leaf's path: leaf k's are [leaf_nodes[k], leaf_nodes[k + 1])
    node_feature: np.ndarray
    node_threshold: np.ndarray  # float32: the row goes left when its value < threshold
    node_left: np.ndarray  # the leaf's path goes to the left child here
    node_default_left: np.ndarray  # missing values go left here
    node_bit: np.ndarray  # 1 << (the split feature's position among the leaf's features)
    leaf_nodes: np.ndarray
    leaf_width: np.ndarray  # the leaf's number of distinct features m
    # the leaf's features: leaf k's are [leaf_entries[k], leaf_entries[k + 1]); feature i's
    # contribution under pattern p is table[entry_table[e] + p * m]
    leaf_entries: np.ndarray
    entry_feature: np.ndarray
    entry_table: np.ndarray
    table: np.ndarray  # float32, as XGBoost computes them

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features + 1): the SHAP value of each feature on the margin scale, and in the
        last column the bias, as `Booster.predict(..., pred_contribs=True)` returns them. `x`:
        the encoded rows (missing values NaN), compared in float32 as a DMatrix stores them."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {x.shape}")
        columns = np.ascontiguousarray(x.T, dtype=np.float32)  # a feature's values together
        out = np.zeros((self.n_features + 1, len(x)))
        out[-1] = self.bias
        _accumulate(
            columns,
            self.node_feature,
            self.node_threshold,
            self.node_left,
            self.node_default_left,
            self.node_bit,
            self.leaf_nodes,
            self.leaf_width,
            self.leaf_entries,
            self.entry_feature,
            self.entry_table,
            self.table,
            np.empty(len(x), dtype=np.int64),
            out,
        )
        return out.T


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _accumulate(
    columns: np.ndarray,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_left: np.ndarray,
    node_default_left: np.ndarray,
    node_bit: np.ndarray,
    leaf_nodes: np.ndarray,
    leaf_width: np.ndarray,
    leaf_entries: np.ndarray,
    entry_feature: np.ndarray,
    entry_table: np.ndarray,
    table: np.ndarray,
    pattern: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover (compiled; its results are tested)
    """Add every leaf's contributions to `out` (features, rows). Leaf by leaf, each leaf's
    splits and table read once for all rows."""
    rows = columns.shape[1]
    for leaf in range(leaf_width.shape[0]):
        width = leaf_width[leaf]
        for r in range(rows):
            pattern[r] = (1 << width) - 1
        for k in range(leaf_nodes[leaf], leaf_nodes[leaf + 1]):
            f = node_feature[k]
            threshold = node_threshold[k]
            default_left = node_default_left[k]
            on_path_left = node_left[k]
            off = ~node_bit[k]
            for r in range(rows):
                v = columns[f, r]
                left = default_left if v != v else v < threshold
                if left != on_path_left:
                    pattern[r] &= off
        for e in range(leaf_entries[leaf], leaf_entries[leaf + 1]):
            f = entry_feature[e]
            base = entry_table[e]
            for r in range(rows):
                out[f, r] += table[base + pattern[r] * width]


def _shapley_weights(m: int) -> np.ndarray:
    """w(s) = s! (m - s - 1)! / m!, for coalitions of s of the other m - 1 players."""
    return np.array(
        [math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)]
    )


def _leaf_tables(value: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(leaves, 2^m, m) contributions of leaves with m distinct path features, for every
    pattern p of o: value · (o_i - z_i) · sum over S ⊆ {j ≠ i: o_j = 1} of w(|S|) ·
    prod_{j ∉ S ∪ {i}} z_j."""
    n, m = z.shape
    masks = np.arange(1 << m)
    bits = (masks[:, None] >> np.arange(m)) & 1  # (2^m, m): bit j of each mask
    size = bits.sum(axis=1)
    # zout[l, T] = prod of z_j over j not in T
    zout = np.prod(np.where(bits[None, :, :] == 1, 1.0, z[:, None, :]), axis=2)
    w = _shapley_weights(m)
    # c[l, i, S] = w(|S|) · zout(S ∪ {i}), for S without i
    c = np.zeros((n, m, 1 << m))
    for i in range(m):
        without = bits[:, i] == 0
        c[:, i, without] = w[size[without]] * zout[:, masks[without] | (1 << i)]
    for b in range(m):  # sum over subsets (zeta transform): c[A] = sum of c[S] for S ⊆ A
        has = bits[:, b] == 1
        c[:, :, has] += c[:, :, masks[has] ^ (1 << b)]
    # G[l, p, i] = c[l, i, p without i]
    g = c[:, np.arange(m)[None, :], masks[:, None] & ~(1 << np.arange(m))[None, :]]
    return value[:, None, None] * (bits[None, :, :] - z[:, None, :]) * g


def tree_shap(booster: xgb.Booster, iteration_end: int) -> TreeShap | None:
    """The tables of `booster`'s trees before `iteration_end` (0: all), or None when the model
    is not one this covers (another objective, several outputs, categorical splits, trees too
    deep to tabulate): its caller then asks XGBoost."""
    covered = covered_trees(booster, iteration_end)
    if covered is None:
        return None
    bias = covered.intercept
    paths: list[list[tuple[int, float, bool, bool, float]]] = []  # per leaf: its splits
    values: list[float] = []
    for tree in covered.trees:
        lc, rc = tree["left_children"], tree["right_children"]
        feat, cond = tree["split_indices"], tree["split_conditions"]
        dleft, cover = tree["default_left"], tree["sum_hessian"]
        stack: list[tuple[int, list[tuple[int, float, bool, bool, float]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if lc[node] == -1:
                share = math.prod(s[4] for s in path)
                bias += cond[node] * share  # the tree's expected value over the training cover
                if path:
                    paths.append(path)
                    values.append(cond[node])
                continue
            for child, left in ((lc[node], True), (rc[node], False)):
                split = (
                    feat[node],
                    cond[node],
                    left,
                    bool(dleft[node]),
                    cover[child] / cover[node],
                )
                stack.append((child, [*path, split]))
    return _tabulate(covered.n_features, bias, paths, np.array(values))


def _tabulate(
    n_features: int,
    bias: float,
    paths: list[list[tuple[int, float, bool, bool, float]]],
    values: np.ndarray,
) -> TreeShap | None:
    slots = [list(dict.fromkeys(s[0] for s in p)) for p in paths]  # distinct, in path order
    m = np.array([len(s) for s in slots], dtype=np.int64)
    size = (1 << m) * m
    if int(size.sum()) > MAX_TABLE_ENTRIES:
        return None
    offsets = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    table = np.zeros(int(size.sum()), dtype=np.float32)
    for k in np.unique(m):  # the leaves with k features together
        idx = np.flatnonzero(m == k)
        z = np.array(
            [[math.prod(s[4] for s in paths[i] if s[0] == f) for f in slots[i]] for i in idx]
        )
        block = _leaf_tables(values[idx], z.reshape(len(idx), int(k))).reshape(len(idx), -1)
        table[(offsets[idx][:, None] + np.arange(block.shape[1])[None, :]).ravel()] = block.ravel()
    nodes = [(s, fs.index(s[0])) for p, fs in zip(paths, slots, strict=True) for s in p]

    def starts(counts: list[int]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    shap = TreeShap(
        n_features=n_features,
        bias=float(bias),
        node_feature=np.array([s[0] for s, _ in nodes], dtype=np.int64),
        node_threshold=np.array([s[1] for s, _ in nodes], dtype=np.float32),
        node_left=np.array([s[2] for s, _ in nodes], dtype=np.bool_),
        node_default_left=np.array([s[3] for s, _ in nodes], dtype=np.bool_),
        node_bit=np.array([1 << i for _, i in nodes], dtype=np.int64),
        leaf_nodes=starts([len(p) for p in paths]),
        leaf_width=m,
        leaf_entries=starts(m.tolist()),
        entry_feature=np.array([f for fs in slots for f in fs], dtype=np.int64),
        entry_table=np.concatenate(
            [offsets[k] + np.arange(len(fs)) for k, fs in enumerate(slots)] or [np.zeros(0)]
        ).astype(np.int64),
        table=table,
    )
    shap.contributions(np.zeros((0, n_features)))  # compiled (or loaded from cache) now
    return shap
