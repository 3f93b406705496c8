"""The dashboard page is rendered from its template with autoescaping."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from cartintel_assets.reporting.dashboard import SECTIONS, Section, render

HOSTILE = "<script>alert('x')</script>"


def test_values_from_the_warehouse_are_escaped_and_charts_are_not() -> None:
    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    sections = [
        Section(
            key,
            kpis={"carts at risk": HOSTILE},
            notes=[HOSTILE],
            figures=[fig] if key == "at-risk" else [],
            tables=[(HOSTILE, pd.DataFrame({"category": [HOSTILE], "share": [0.25]}))],
        )
        for key in SECTIONS
    ]
    page = render(sections, built_from=HOSTILE)
    assert HOSTILE not in page
    assert page.count("&lt;script&gt;alert(") >= 4 * len(SECTIONS)
    assert page.count('id="at-risk-chart-0"') == 1 and "plotly" in page.lower()
    assert all(f'<section id="{k}">' in page for k in SECTIONS)
    assert "0.250" in page
