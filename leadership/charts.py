"""Plotly figures for the SLO page. Pure: selector output in, HTML out."""

from datetime import datetime, timedelta

import plotly.graph_objects as go
from django.utils import timezone

from leadership.selectors import CHART_BURN_WINDOWS, Marker, SLOSeries
from rollouts.charts import figure_html
from signals.models import SLO

BLUE, RED, AMBER, GREEN, GREY, PURPLE = (
    "#1f4e8c",
    "#b42318",
    "#d98200",
    "#1d7a3a",
    "#8a94a3",
    "#7c3aed",
)
BURN_COLORS = {"1h": RED, "6h": AMBER, "3d": BLUE}
MARKER_COLORS = {"step": PURPLE, "flag": AMBER, "incident": RED}
MARKER_NAMES = {"step": "steps", "flag": "flag changes", "incident": "incidents"}


def _local(at: datetime) -> datetime:
    # plotly.js reads wall-clock times; an offset in the string would be dropped, not applied.
    return timezone.localtime(at).replace(tzinfo=None)


def _layout(fig: go.Figure, *, title: str, y_title: str, height: int = 280) -> None:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 14}},
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        yaxis={"title": y_title, "gridcolor": "#e6e9ee", "zeroline": False},
        xaxis={"gridcolor": "#e6e9ee"},
        hovermode="x unified",
    )


def _mark(fig: go.Figure, markers: list[Marker]) -> None:
    """Vertical lines where a touching step moved, its flag changed or an incident was declared,
    each with a hover label: what changed when the budget dropped."""
    for kind in MARKER_COLORS:
        shown = [m for m in markers if m.kind == kind]
        if not shown:
            continue
        for m in shown:
            fig.add_vline(
                x=_local(m.at), line={"color": MARKER_COLORS[kind], "width": 1, "dash": "dot"}
            )
        fig.add_trace(
            go.Scatter(
                x=[_local(m.at) for m in shown],
                y=[1.0] * len(shown),
                yaxis="y2",
                mode="markers",
                marker={"symbol": "triangle-down", "size": 10, "color": MARKER_COLORS[kind]},
                name=MARKER_NAMES[kind],
                text=[m.text for m in shown],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        yaxis2={"overlaying": "y", "range": [0, 1.05], "visible": False, "fixedrange": True}
    )


def sli_chart(slo: SLO, series: SLOSeries, markers: list[Marker]) -> str:
    fig = go.Figure()
    xs = [_local(e) for e in series.ends]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[None if v is None else v * 100 for v in series.sli],
            mode="lines",
            name="SLI",
            line={"color": BLUE, "width": 1.5},
            connectgaps=False,
            hovertemplate="%{y:.3f}%",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[xs[0], xs[-1]] if xs else [],
            y=[slo.objective * 100] * (2 if xs else 0),
            mode="lines",
            name=f"objective {slo.objective * 100:g}%",
            line={"color": RED, "dash": "dash", "width": 1.5},
            hoverinfo="skip",
        )
    )
    _mark(fig, markers)
    step = _step_text(series.resolution_seconds)
    _layout(fig, title=f"SLI per {step} against the objective", y_title="% good")
    return figure_html(fig, div_id="chart-sli")


def budget_chart(series: SLOSeries, markers: list[Marker]) -> str:
    fig = go.Figure()
    xs = [_local(e) for e in series.ends]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[None if v is None else v * 100 for v in series.budget_remaining],
            mode="lines",
            name="budget remaining",
            line={"color": GREEN, "width": 2},
            fill="tozeroy",
            fillcolor="rgba(29,122,58,0.12)",
            hovertemplate="%{y:.1f}% left",
        )
    )
    fig.add_hline(y=0, line={"color": RED, "width": 1})
    _mark(fig, markers)
    _layout(fig, title="Error budget remaining across the window", y_title="% of budget")
    return figure_html(fig, div_id="chart-budget")


def latency_chart(slo: SLO, series: SLOSeries, markers: list[Marker]) -> str | None:
    """p99 and p999 per minute (the worst minute of each step on long windows); None when the SLI
    has no latency distribution (a ratio SLI, or a threshold read from Prometheus: its number)."""
    xs = [_local(e) for e in series.latency_ends]
    fig = go.Figure()
    if any(v is not None for v in series.p99):
        title, y_title = "Latency: p99 and p999", "ms"
        fig.add_trace(
            go.Scatter(x=xs, y=series.p99, mode="lines", name="p99", line={"color": BLUE})
        )
        fig.add_trace(
            go.Scatter(x=xs, y=series.p999, mode="lines", name="p999", line={"color": AMBER})
        )
    elif any(v is not None for v in series.value):
        # A Prometheus threshold SLI is one number per minute, in whatever unit its query has.
        title, y_title = "SLI value per minute, against its threshold", "value"
        fig.add_trace(
            go.Scatter(x=xs, y=series.value, mode="lines", name="SLI value", line={"color": BLUE})
        )
    else:
        return None
    if slo.threshold is not None:
        fig.add_hline(
            y=slo.threshold,
            line={"color": RED, "dash": "dash", "width": 1.5},
            annotation_text=f"threshold {slo.threshold:g}",
            annotation_position="top left",
        )
    _mark(fig, markers)
    _layout(fig, title=title, y_title=y_title)
    return figure_html(fig, div_id="chart-latency")


def burn_chart(series: SLOSeries, rules: list[dict], markers: list[Marker]) -> str:
    fig = go.Figure()
    xs = [_local(e) for e in series.ends]
    for label in CHART_BURN_WINDOWS:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=series.burn_rates.get(label, []),
                mode="lines",
                name=f"burn rate over {label}",
                line={"color": BURN_COLORS[label], "width": 1.5},
                hovertemplate="%{y:.2f}x",
            )
        )
    for rule in rules:
        color = BURN_COLORS.get(rule["long"], GREY)
        fig.add_hline(
            y=rule["threshold"],
            line={"color": color, "dash": "dash", "width": 1},
            annotation_text=f"{rule['severity']} {rule['threshold']:.2f}x ({rule['label']})",
            annotation_position="top left",
            annotation_font={"size": 10, "color": color},
        )
    _mark(fig, markers)
    _layout(
        fig,
        title="Burn rate per window, with the alert thresholds",
        y_title="times the budget rate",
    )
    fig.update_yaxes(rangemode="tozero")
    return figure_html(fig, div_id="chart-burn")


def _step_text(seconds: int) -> str:
    return {60: "minute", 600: "10 minutes", 3600: "hour"}.get(seconds, f"{seconds} s")


DECISION_COLORS = {"adapt": BLUE, "persist": AMBER, "kill": RED, "other": GREY}


def decisions_chart(weekly: list[dict]) -> str:
    """Adapt / persist / kill calls per week, stacked: a rising adapt bar is thrash, a kill after
    months of persist is sunk cost caught late."""
    fig = go.Figure()
    weeks = sorted({row["week"] for row in weekly})
    for decided, color in DECISION_COLORS.items():
        counts = {row["week"]: row["count"] for row in weekly if row["decided"] == decided}
        if not counts:
            continue
        fig.add_trace(
            go.Bar(
                x=[_local(w) if isinstance(w, datetime) else w for w in weeks],
                y=[counts.get(w, 0) for w in weeks],
                name=decided,
                marker={"color": color},
                hovertemplate="week of %{x|%Y-%m-%d}: %{y}<extra>" + decided + "</extra>",
            )
        )
    _layout(fig, title="Calls per week", y_title="decisions", height=260)
    week_ms = 7 * 86400 * 1000
    starts = [_local(w) if isinstance(w, datetime) else w for w in weeks]
    # Each bar spans its week (Monday to Sunday), with the ticks on the Mondays.
    fig.update_traces(
        width=week_ms * 0.7,
        xperiod=week_ms,
        xperiod0=min(starts) if starts else None,
        xperiodalignment="middle",
    )
    fig.update_layout(barmode="stack", hovermode="closest")
    fig.update_xaxes(
        type="date",
        tickformat="%b %d",
        dtick=week_ms,
        tick0=min(starts) if starts else None,
        range=[min(starts) - timedelta(days=7), max(starts) + timedelta(days=14)]
        if starts
        else None,
    )
    fig.update_yaxes(dtick=1, rangemode="tozero")
    return figure_html(fig, div_id="chart-decisions")
