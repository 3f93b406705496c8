"""The executive dashboard: one self-contained HTML file (Plotly, its JavaScript inlined, no network
needed) answering the product brief's four questions from the warehouse's latest outputs, with the
data-quality scorecard and the model/phase status beside them. No Dagster import.

1. Who is most at risk of abandoning?      `abandonment_scores` x `session_features`
2. Which segments require intervention?    `intervention_plan` (segment, risk, margin, action)
3. Which products and categories drive friction?   `friction_index`, `friction_drivers`,
                                            `category_review_signals`
4. What actions are likely to increase conversion?  the plan's expected outcomes, and the lift
                                            measured on the randomised log against its control arm
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cartintel_assets.models.reasons import explain_all
from cartintel_assets.reporting import queries as q

DASHBOARD_FILE = "executive_dashboard.html"
AT_RISK = 0.5  # a cart counts as at risk when its risk of harmful abandonment reaches this
SECTIONS: dict[str, str] = {
    "at-risk": "Who is most at risk of abandoning?",
    "segments": "Which segments require intervention?",
    "friction": "Which products and categories drive friction?",
    "actions": "What actions are likely to increase conversion?",
    "data-quality": "Can the data be trusted? (data-quality scorecard)",
    "models": "Which models decide? (registry phases)",
}


def page_path(reports: Path) -> Path:
    """Where the dashboard is written under the reports folder (and served from)."""
    return reports / "dashboard" / DASHBOARD_FILE


@dataclass
class Section:
    key: str
    kpis: dict[str, str] = field(default_factory=dict)
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=380, margin={"t": 60})
    return fig


def at_risk(con: duckdb.DuckDBPyConnection) -> Section:
    s = Section("at-risk")
    day = q.latest_day(con, "abandonment_scores")
    carts = q.scored_carts(con, day)
    if carts.empty:
        s.notes.append("No scored carts yet: run abandonment_scoring_job for a day.")
        return s
    carts["expected_loss"] = carts["risk"] * carts["cart_value"]
    risky = carts[carts["risk"] >= AT_RISK]
    s.kpis = {
        "day": str(day),
        "open carts scored": f"{len(carts):,}",
        f"at risk (risk ≥ {AT_RISK:g})": f"{len(risky):,} ({len(risky) / len(carts):.0%})",
        "expected revenue lost (Σ risk × cart value)": f"{carts['expected_loss'].sum():,.0f}",
    }
    fig = go.Figure(go.Histogram(x=carts["risk"], nbinsx=20, marker_color="#c0392b"))
    fig.update_xaxes(title="risk of harmful abandonment")
    fig.update_yaxes(title="carts")
    s.figures.append(_layout(fig, "Risk of the day's open carts"))
    by_region = (
        carts.groupby("region")
        .agg(
            carts=("risk", "size"),
            at_risk=("risk", lambda r: int((r >= AT_RISK).sum())),
            expected_loss=("expected_loss", "sum"),
        )
        .reset_index()
        .sort_values("expected_loss", ascending=False)
    )
    fig = go.Figure(
        go.Bar(
            x=by_region["region"],
            y=by_region["expected_loss"],
            customdata=by_region[["carts", "at_risk"]],
            hovertemplate="%{x}: %{y:,.0f} expected lost revenue<br>%{customdata[0]} carts,"
            " %{customdata[1]} at risk<extra></extra>",
            marker_color="#e67e22",
        )
    )
    fig.update_yaxes(title="expected revenue lost")
    s.figures.append(_layout(fig, "Expected lost revenue by region"))
    top = carts.nlargest(10, "expected_loss")
    said = [explain_all(list(r["reason_codes"]), r) for _, r in top.iterrows()]
    top = top.assign(
        frictions_to_act_on=["; ".join(x.text for x in r if x.actionable) for r in said],
        behaviour=["; ".join(x.text for x in r if not x.actionable) for r in said],
    )
    shown = ["session_id", "region", "device", "cart_value", "risk", "frictions_to_act_on"]
    s.tables.append(("Carts with the most revenue at risk, and why", top[[*shown, "behaviour"]]))
    return s


def segments(con: duckdb.DuckDBPyConnection) -> Section:
    s = Section("segments")
    day = q.latest_day(con, "intervention_plan")
    plan = q.planned_carts(con, day)
    if plan.empty:
        s.notes.append("No intervention plan yet: run intervention_plan_job for a scored day.")
        return s
    treated = plan[plan["action"] != "none"]
    action = treated.groupby("segment")["action"].agg(lambda a: a.value_counts().index[0])
    seg = (
        plan.groupby("segment")
        .agg(
            carts=("risk", "size"),
            mean_risk=("risk", "mean"),
            at_risk=("risk", lambda r: float((r >= AT_RISK).mean())),
            nudged=("action", lambda a: int((a != "none").sum())),
            margin=("incremental_margin", "sum"),
        )
        .reset_index()
    )
    seg["recommended_action"] = seg["segment"].map(action).fillna("none")
    seg = seg.sort_values("margin", ascending=False)
    s.kpis = {
        "day planned": str(day),
        "segments": str(len(seg)),
        "segments with a paying intervention": str(int((seg["nudged"] > 0).sum())),
    }
    fig = go.Figure(
        go.Scatter(
            x=seg["mean_risk"],
            y=seg["margin"],
            mode="markers+text",
            text=seg["segment"],
            textposition="top center",
            marker={
                "size": np.sqrt(seg["carts"].to_numpy(dtype=float)) * 2 + 6,
                "color": seg["at_risk"],
                "colorscale": "Reds",
                "showscale": True,
                "colorbar": {"title": "share at risk"},
            },
            customdata=seg[["carts", "nudged", "recommended_action"]],
            hovertemplate="%{text}<br>mean risk %{x:.2f}, expected incremental margin %{y:,.1f}"
            "<br>%{customdata[0]} carts, %{customdata[1]} nudged, mostly"
            " %{customdata[2]}<extra></extra>",
        )
    )
    fig.update_xaxes(title="mean risk")
    fig.update_yaxes(title="expected incremental margin of the plan")
    s.figures.append(_layout(fig, "Segments: risk, size (bubble) and what intervening earns"))
    s.tables.append(
        (
            "Segments by expected incremental margin",
            seg.rename(columns={"margin": "expected_incremental_margin"}),
        )
    )
    return s


ASPECTS = ("shipping", "price", "size_fit", "quality", "returns", "service")


def friction(con: duckdb.DuckDBPyConnection) -> Section:
    s = Section("friction")
    index = q.friction_index(con)
    if index.empty:
        s.notes.append("No friction index yet: run friction_job.")
        return s
    hover = {  # what each driver column means; review columns exist once reviews are aggregated
        "harmful_rate": "harmful abandonment %{customdata[I]:.0%}",
        "shipping_share": "shipping share %{customdata[I]:.0%}",
        "price_rise": "price rise %{customdata[I]:.1%}",
        "delivery_days": "delivery %{customdata[I]:.1f} days",
        "review_negative_share": "negative reviews %{customdata[I]:.0%}",
    }
    shown = [c for c in hover if c in index]
    lines = [hover[c].replace("[I]", f"[{i}]") for i, c in enumerate(shown)]
    fig = go.Figure(
        go.Bar(
            x=index["category"],
            y=index["friction_index"],
            customdata=index[shown],
            hovertemplate="%{x}: friction index %{y:.2f}<br>"
            + "<br>".join(lines)
            + "<extra></extra>",
            marker_color="#8e44ad",
        )
    )
    fig.update_yaxes(title="friction index")
    s.figures.append(_layout(fig, "Categories by friction index (hover: the drivers)"))
    shap = q.friction_drivers(con, "category").rename(columns={"scope": "category"})
    if not shap.empty:
        wide = shap.pivot_table(index="feature", columns="category", values="mean_abs_shap")
        fig = go.Figure(
            go.Heatmap(
                z=wide.to_numpy(), x=list(wide.columns), y=list(wide.index), colorscale="Purples"
            )
        )
        s.figures.append(_layout(fig, "Friction drivers per category (mean |SHAP| on risk)"))
    themes = q.review_signals(con)
    if not themes.empty:
        cols = [f"share_negative_{a}" for a in ASPECTS if f"share_negative_{a}" in themes]
        fig = go.Figure(
            go.Heatmap(
                z=themes[cols].to_numpy(),
                x=[c.removeprefix("share_negative_") for c in cols],
                y=themes["category"],
                colorscale="Oranges",
                hovertemplate="%{y}: %{z:.0%} of reviews complain about %{x}<extra></extra>",
            )
        )
        s.figures.append(_layout(fig, "Review themes: share of reviews complaining, by aspect"))
    s.tables.append(
        ("Friction index and its drivers", index.drop(columns=["note"], errors="ignore"))
    )
    return s


_LIFT_SQL = """
SELECT treatment, count(*) AS carts, avg(converted_7d::INTEGER) AS conversion
FROM raw_interventions GROUP BY treatment ORDER BY treatment
"""


def actions(con: duckdb.DuckDBPyConnection) -> Section:
    s = Section("actions")
    day = q.latest_day(con, "intervention_plan")
    plan = q.plan_by_action(q.planned_carts(con, day))
    plan = plan[plan["action"] != "none"] if not plan.empty else plan
    if not plan.empty:
        s.kpis = {
            "day planned": str(day),
            "nudges": f"{int(plan['carts'].sum()):,}",
            "expected spend": f"{plan['expected_cost'].sum():,.2f}",
            "expected incremental conversions": f"{plan['incremental_conversions'].sum():.1f}",
            "expected incremental margin": f"{plan['incremental_margin'].sum():,.1f}",
        }
        fig = go.Figure(
            [
                go.Bar(
                    name="expected incremental margin",
                    x=plan["action"],
                    y=plan["incremental_margin"],
                ),
                go.Bar(name="expected cost", x=plan["action"], y=plan["expected_cost"]),
            ]
        )
        fig.update_layout(barmode="group")
        s.figures.append(_layout(fig, f"The plan of {day}: what each action is expected to earn"))
    else:
        s.notes.append("No intervention plan yet: run intervention_plan_job for a scored day.")
    _realised(con, s)
    log = q.query(con, "raw_interventions", _LIFT_SQL)
    if not log.empty and "control" in set(log["treatment"]):
        ctrl = log.set_index("treatment").loc["control"]
        arms = log[log["treatment"] != "control"].copy()
        p1, n1 = arms["conversion"], arms["carts"]
        p0, n0 = float(ctrl["conversion"]), float(ctrl["carts"])
        arms["lift"] = p1 - p0
        arms["half_ci"] = 1.96 * np.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
        fig = go.Figure(
            go.Bar(
                x=arms["treatment"],
                y=arms["lift"],
                error_y={"type": "data", "array": arms["half_ci"]},
                customdata=arms[["carts", "conversion"]],
                hovertemplate="%{x}: %{y:+.1%} conversion vs control (95 % CI ±"
                " %{error_y.array:.1%})<br>%{customdata[0]} carts, %{customdata[1]:.1%}"
                " converted<extra></extra>",
                marker_color="#27ae60",
            )
        )
        fig.update_yaxes(title="7-day conversion lift vs control", tickformat="+.0%")
        s.figures.append(
            _layout(fig, "Measured lift against the holdout (randomised log, 95 % CI)")
        )
        s.tables.append(("Randomised intervention log", log))
    return s


def _realised(con: duckdb.DuckDBPyConnection, s: Section) -> None:
    """What the published plans' decisions realised against the persistent holdout, per day and
    policy version, with 95 % intervals, beside what each plan expected."""
    from cartintel_assets.decisions.economics import realised_margin
    from cartintel_assets.decisions.evaluation import realised_against_holdout
    from cartintel_assets.decisions.settings import PlanSettings

    acted = q.acted_decisions(con)
    if acted.empty:
        s.notes.append(
            "Nothing realised yet: no published plan has been acted on (the demo's closed loop"
            " lands the outcomes of each day's decisions)."
        )
        return
    plan = PlanSettings().deployed()
    realised = realised_margin(acted, plan.catalogue(), plan.margin_rate)
    table = realised_against_holdout(acted, realised, ["day", "policy_version"]).merge(
        q.expected_by_day(con), on=["day", "policy_version"], how="left"
    )
    table["day"] = table["day"].astype(str)
    label = table["day"] + " v" + table["policy_version"].astype(str)
    fig = go.Figure(
        [
            go.Bar(
                name="realised vs the holdout (95 % CI)",
                x=label,
                y=table["incremental_margin"],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": table["incremental_margin_hi"] - table["incremental_margin"],
                    "arrayminus": table["incremental_margin"] - table["incremental_margin_lo"],
                },
                marker_color="#2980b9",
            ),
            go.Scatter(
                name="expected by the plan",
                x=label,
                y=table["expected_margin"],
                mode="markers",
                marker={"symbol": "diamond", "size": 10, "color": "#e67e22"},
            ),
        ]
    )
    fig.update_yaxes(title="incremental margin")
    s.figures.append(
        _layout(fig, "Realised incremental margin against the holdout, per day and policy version")
    )
    total = realised_against_holdout(acted.assign(all="all days"), realised, ["all"])
    s.kpis["realised incremental margin (all days)"] = (
        f"{total['incremental_margin'].iloc[0]:,.0f} (95 % {total['incremental_margin_lo'].iloc[0]:,.0f}"
        f" to {total['incremental_margin_hi'].iloc[0]:,.0f})"
    )
    s.tables.append(("Realised against the holdout, beside what each plan expected", table))


def data_quality(con: duckdb.DuckDBPyConnection) -> Section:
    s = Section("data-quality")
    card = q.quality_scorecard(con)
    if card.empty:
        s.notes.append("No scorecard yet: ingest a day (storefront_daily_job).")
        return s
    card["partition_date"] = pd.to_datetime(card["partition_date"]).dt.date.astype(str)
    wide = card.pivot_table(index="standard", columns="partition_date", values="row_score")
    fig = go.Figure(
        go.Heatmap(
            z=wide.to_numpy(),
            x=list(wide.columns),
            y=list(wide.index),
            colorscale="RdYlGn",
            zmin=0.95,
            zmax=1.0,
            hovertemplate="%{y} on %{x}: %{z:.2%} of rows meet it<extra></extra>",
        )
    )
    s.figures.append(_layout(fig, "Share of landed rows meeting each standard, per day"))
    last = card[card["partition_date"] == card["partition_date"].max()]
    s.kpis = {
        f"{r.standard} ({r.partition_date})": f"{r.row_score:.2%} · {r.status}"
        for r in last.itertuples()
    }
    s.kpis["blocking failures (all days)"] = str(int(card["blocking_failures"].sum()))
    return s


def models(con: duckdb.DuckDBPyConnection, aliases: dict[str, dict[str, str]]) -> Section:
    s = Section("models")
    rows = [
        {"model": name, "alias": alias, "version": version}
        for name, held in aliases.items()
        for alias, version in sorted(held.items())
    ]
    s.tables.append(
        ("Registry aliases now (MLflow)", pd.DataFrame(rows, columns=["model", "alias", "version"]))
    )
    for name, held in aliases.items():
        phases = ", ".join(f"{a} v{v}" for a, v in sorted(held.items())) or "none"
        s.kpis[name] = phases
    log = q.promotion_moves(con)
    if not log.empty:
        shown = ["logged_at", "model_name", "phase", "action", "outcome", "from_version"]
        shown += ["to_version", "triggered_by", "reason"]
        s.tables.append(("Latest promotion decisions", log[shown].iloc[::-1].head(10)))
    checks = q.monitoring_checks(con)
    if not checks.empty:
        latest = checks.sort_values(["partition_date", "check_name"], ascending=[False, True])
        shown = ["partition_date", "model_version", "check_name", "passed", "value"]
        s.tables.append(("Latest drift and performance checks", latest[shown].head(12)))
    return s


def build(con: duckdb.DuckDBPyConnection, aliases: dict[str, dict[str, str]]) -> list[Section]:
    """Every section, from what the warehouse holds now."""
    return [
        at_risk(con),
        segments(con),
        friction(con),
        actions(con),
        data_quality(con),
        models(con, aliases),
    ]


def _template() -> Any:
    """The page's Jinja2 template; autoescaping escapes every value that is not already HTML."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("cartintel_assets.reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
    )
    return env.get_template("dashboard.html.j2")


def render(sections: list[Section], built_from: str) -> str:
    """The HTML page; Plotly's JavaScript is inlined once, so the file opens offline."""
    from markupsafe import Markup

    shown = []
    first = True
    for sec in sections:
        charts = []
        for i, fig in enumerate(sec.figures):
            # Plotly's own HTML (its JSON is escaped for a script element)
            charts.append(
                Markup(
                    fig.to_html(
                        full_html=False,
                        include_plotlyjs=first,
                        div_id=f"{sec.key}-chart-{i}",
                        config={"displaylogo": False, "responsive": True},
                    )
                )
            )
            first = False
        tables = [
            # pandas escapes the cells (escape=True is its default)
            (title, Markup(t.head(15).to_html(index=False, float_format=_fmt, border=0)))
            for title, t in sec.tables
        ]
        shown.append(
            {
                "key": sec.key,
                "kpis": sec.kpis,
                "notes": sec.notes,
                "charts": charts,
                "tables": tables,
            }
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(
        _template().render(sections=shown, questions=SECTIONS, stamp=stamp, built_from=built_from)
    )


def publish(
    con: duckdb.DuckDBPyConnection, store: Any, reports: Path, built_from: str
) -> tuple[Path, str, list[Section]]:
    """Build the page from the warehouse and the registry's aliases and swap it in atomically
    (the service may be serving the old file meanwhile); its path, text and sections."""
    from cartintel_assets.registry.names import REGISTERED_MODELS
    from cartintel_assets.registry.promotion import aliases

    held = {name: aliases(store, name) for name in REGISTERED_MODELS}
    sections = build(con, held)
    page = render(sections, built_from)
    path = page_path(reports)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path, page, sections


def _fmt(value: float) -> str:
    return f"{value:,.3f}"
