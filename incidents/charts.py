"""Plotly figures for the incident pages. Pure: `incident_durations` rows in, figure out."""

import statistics
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
from django.utils import timezone

from rollouts.charts import figure_html

SERIES = (
    ("mttd", "MTTD (to declare)", "#1f4e8c"),
    ("mttm", "MTTM (to mitigate)", "#d98200"),
    ("mttr", "MTTR (to resolve)", "#1d7a3a"),
)
# Above this many incidents one marker per incident is noise: plot weekly medians instead.
PER_INCIDENT_LIMIT = 30


def _local(at: datetime) -> datetime:
    # plotly.js reads wall-clock times; an offset in the string would be dropped, not applied.
    return timezone.localtime(at).replace(tzinfo=None)


def _week_of(row: dict[str, Any]) -> date:
    day = timezone.localtime(row["declared_at"]).date()
    return day - timedelta(days=day.weekday())


def durations_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """MTTD / MTTM / MTTR in minutes against the declaration time, one point per incident, or the
    weekly median when there are more than PER_INCIDENT_LIMIT incidents. A series an incident
    has not reached leaves a gap rather than a zero."""
    fig = go.Figure()
    weekly = len(rows) > PER_INCIDENT_LIMIT
    if weekly:
        weeks: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            weeks[_week_of(row)].append(row)
        starts = sorted(weeks)
    for key, name, color in SERIES:
        if weekly:
            points = [
                (week, statistics.median(values), len(values))
                for week in starts
                if (values := [r[key] for r in weeks[week] if r[key] is not None])
            ]
            trace = go.Scatter(
                x=[p[0] for p in points],
                y=[round(p[1], 1) for p in points],
                customdata=[p[2] for p in points],
                hovertemplate="week of %{x|%Y-%m-%d}<br>median %{y} min over %{customdata} "
                f"incidents<extra>{name}</extra>",
            )
        else:
            points = [r for r in rows if r[key] is not None]
            trace = go.Scatter(
                x=[_local(r["declared_at"]) for r in points],
                y=[round(r[key], 1) for r in points],
                customdata=[[f"INC-{r['id']}", r["title"][:60], r["severity"]] for r in points],
                hovertemplate="<b>%{customdata[0]}</b> %{customdata[2]} %{customdata[1]}"
                f"<br>%{{y}} min<extra>{name}</extra>",
            )
        if not points:
            continue
        trace.update(
            mode="markers+lines",
            name=name,
            line={"color": color, "width": 2},
            marker={"color": color, "size": 8},
        )
        fig.add_trace(trace)
    fig.update_layout(
        height=320,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis={
            "title": "declared (weekly medians)" if weekly else "declared",
            "showgrid": False,
        },
        yaxis={
            "title": "minutes from detection",
            "rangemode": "tozero",
            "gridcolor": "#eef0f3",
            "zeroline": False,
        },
        hovermode="closest",
    )
    return fig


def durations_chart(rows: list[dict[str, Any]], *, div_id: str = "incident-durations") -> str:
    return figure_html(durations_figure(rows), div_id=div_id)
