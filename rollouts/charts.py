"""Plotly figures from selector output. Pure: data in, figure out."""

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from django.utils.html import format_html
from plotly.subplots import make_subplots

from rollouts.graph import critical_path, topological_order
from rollouts.models import Step
from signals.canary import CanaryJudgement, MetricVerdict

STATUS_COLORS = {
    "pending": "#9aa4b2",
    "ready": "#4a90d9",
    "running": "#f0a500",
    "verifying": "#d98200",
    "converging": "#b06ad9",
    "done": "#1d7a3a",
    "failed": "#b42318",
    "reverted": "#7a2a1e",
    "skipped": "#c9d3e2",
}


STACK_GAP = 0.5  # lanes between two steps of one team at one depth


def dependency_graph(steps: list[Step], deps: dict[int, list[int]]) -> go.Figure:
    """Steps as nodes in team lanes (y) by dependency depth (x); edges for dependencies; the critical
    path drawn thick; lockstep groups outlined in one colour."""
    by_id = {s.pk: s for s in steps}
    graph = {s.pk: [d for d in deps.get(s.pk, []) if d in by_id] for s in steps}
    order = topological_order(graph, {s.pk: s.position for s in steps})
    depth: dict[int, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[d] for d in graph[node]), default=-1)
    teams = sorted({s.owner_team for s in steps})
    slot: dict[int, int] = {}
    stacked: dict[tuple[int, str], int] = defaultdict(int)
    for node in order:
        key = (depth[node], by_id[node].owner_team)
        slot[node] = stacked[key]
        stacked[key] += 1
    # Steps sharing a team and a depth stack inside their lane, far enough apart that each label
    # clears the marker above it; a lane is as tall as its tallest stack.
    base: dict[str, float] = {}
    lane: dict[str, float] = {}
    y = 0.0
    for team in teams:
        height = STACK_GAP * (max(n for (_, t), n in stacked.items() if t == team) - 1)
        base[team], lane[team] = y, y + height / 2
        y += height + 1
    pos = {
        node: (depth[node], base[by_id[node].owner_team] + STACK_GAP * slot[node]) for node in order
    }
    critical = set()
    path = critical_path(graph, {})
    critical.update(itertools.pairwise(path))

    fig = go.Figure()
    for is_critical in (False, True):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for node, node_deps in graph.items():
            for dep in node_deps:
                if ((dep, node) in critical) == is_critical:
                    xs += [pos[dep][0], pos[node][0], None]
                    ys += [pos[dep][1], pos[node][1], None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                hoverinfo="skip",
                showlegend=True,
                name="critical path" if is_critical else "depends on",
                line={
                    "width": 4 if is_critical else 1.5,
                    "color": "#b42318" if is_critical else "#8a94a3",
                },
            )
        )
    groups = sorted({s.lockstep_group for s in steps if s.lockstep_group})
    outline = dict(zip(groups, ["#1f4e8c", "#0f766e", "#7c3aed", "#a16207"] * 5, strict=False))
    for status, color in STATUS_COLORS.items():
        members = [s for s in steps if s.status == status]
        if not members:
            continue
        fig.add_trace(
            go.Scatter(
                x=[pos[s.pk][0] for s in members],
                y=[pos[s.pk][1] for s in members],
                mode="markers+text",
                name=status,
                text=[s.key for s in members],
                textposition="top center",
                customdata=[[s.title, s.owner_team, s.lockstep_group or "—"] for s in members],
                hovertemplate="<b>%{text}</b><br>%{customdata[0]}<br>team %{customdata[1]}<br>lockstep %{customdata[2]}<extra>"
                + status
                + "</extra>",
                marker={
                    "size": 18,
                    "color": color,
                    "line": {
                        "width": [4 if s.lockstep_group else 1 for s in members],
                        "color": [outline.get(s.lockstep_group, "#333") for s in members],
                    },
                    "symbol": ["diamond" if s.lockstep_group else "circle" for s in members],
                },
            )
        )
    fig.update_layout(
        height=max(260, round(90 * y) + 80),
        margin={"l": 140, "r": 20, "t": 40, "b": 50},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis={"title": "dependency depth", "showgrid": False, "zeroline": False, "dtick": 1},
        yaxis={
            "tickvals": list(lane.values()),
            "ticktext": teams,
            "showgrid": True,
            "zeroline": False,
            "range": [-0.6, y - 0.1],
        },
    )
    return fig


def figure_html(fig: go.Figure, *, div_id: str) -> str:
    """The chart's element, its figure as data: static/js/charts.js draws it (the Content-Security-
    Policy runs no inline script, so Plotly's own `to_html` cannot be used)."""
    height = fig.layout.height
    # Plotly adds `js-plotly-plot` (which stacks its svg layers) when it draws; an htmx swap of a
    # pushed chart restores the markup's classes after the draw, dropping it, and the layers then
    # spill over the page and swallow clicks. Present from the start, nothing can take it away.
    return format_html(
        '<div style="height:{}; width:100%;"><div id="{}" class="plotly-graph-div js-plotly-plot"'
        ' style="height:100%; width:100%;" data-figure="{}"></div></div>',
        f"{height}px" if height else "100%",
        div_id,
        fig.to_json(),
    )


CANARY_MAX_PANELS = 6
CANARY_POINTS_LIMIT = 500  # above this, draw box statistics only: dots would be noise and bytes
CANARY_COLORS = {"baseline": "#8a94a3", "canary": "#1f4e8c", "failed": "#b42318"}
CANARY_VERDICT_COLORS = {"pass": "#1d7a3a", "marginal": "#9a6200", "fail": "#b42318"}


def canary_chart(
    judgement: CanaryJudgement,
    distributions: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    div_id: str = "canary-chart",
) -> str:
    """Baseline vs canary box plots, one panel per metric (failed metrics first, at most six), each
    titled with its verdict; the canary box is red where the metric failed. `distributions` maps a
    metric name to `(baseline_values, canary_values)`, the order `canary_judge` takes them in."""
    shown = sorted(judgement.metrics, key=lambda m: not m.failed)[:CANARY_MAX_PANELS]
    cols = 1 if len(shown) == 1 else 2
    rows = max(1, math.ceil(len(shown) / cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[_canary_panel_title(m) for m in shown],
        horizontal_spacing=0.12,
        # a fixed ~105 px between rows leaves room for two-line tick labels and the next title
        vertical_spacing=105 / (110 + 270 * rows) if rows > 1 else 0.1,
    )
    for i, metric in enumerate(shown):
        baseline, canary = distributions.get(metric.name, ((), ()))
        canary_color = CANARY_COLORS["failed" if metric.failed else "canary"]
        for label, values, color in (
            ("baseline", baseline, CANARY_COLORS["baseline"]),
            ("canary", canary, canary_color),
        ):
            fig.add_trace(
                _canary_box(label=label, values=values, color=color),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    for annotation, metric in zip(fig.layout.annotations, shown, strict=True):
        if metric.failed:
            color = CANARY_COLORS["failed"]
        elif metric.classification == "nodata":
            color = "#5b6472"
        else:
            color = "#1b1f24"
        annotation.font = {"size": 13, "color": color}
    title = f"Canary score {judgement.score:.0f} / 100 — {judgement.verdict.upper()}"
    if len(shown) < len(judgement.metrics):
        title += f"  (showing {len(shown)} of {len(judgement.metrics)} metrics, failed first)"
    fig.update_layout(
        title={
            "text": title,
            "x": 0,
            "xref": "paper",
            "xanchor": "left",
            "font": {"size": 16, "color": CANARY_VERDICT_COLORS.get(judgement.verdict, "#1b1f24")},
        },
        height=110 + 270 * rows,
        margin={"l": 60, "r": 20, "t": 90, "b": 40},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        showlegend=False,
    )
    fig.update_yaxes(showgrid=True, gridcolor="#eef0f3", zeroline=False)
    return figure_html(fig, div_id=div_id)


def _canary_panel_title(metric: MetricVerdict) -> str:
    if metric.classification == "nodata":
        return (
            f"{metric.name} — NO DATA ({metric.canary_count} canary / "
            f"{metric.baseline_count} baseline values)"
        )
    p = metric.p_value if metric.p_value is not None else 1.0
    p_text = "p<0.0001" if p < 0.0001 else f"p={p:.2g}"
    if metric.relative_shift is not None:
        shift = f"{100 * metric.relative_shift:+.0f} %"
    else:
        shift = f"{metric.shift or 0.0:+.3g} abs"
    return f"{metric.name} — {metric.classification.upper()} ({p_text}, {shift})"


def _canary_box(*, label: str, values: Sequence[float], color: str) -> go.Box:
    data = np.asarray(values, dtype=float).ravel()
    data = data[np.isfinite(data)]
    category = f"{label}<br>n={data.size:,}"
    if data.size <= CANARY_POINTS_LIMIT:
        return go.Box(
            x=[category] * data.size,
            y=data,
            boxpoints="all",
            jitter=0.45,
            pointpos=0,
            marker={"color": color, "size": 4, "opacity": 0.45},
            line={"color": color},
            name=label,
        )
    # Precomputed statistics (the same linear quartiles plotly.js uses) keep a 10k-sample page small.
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    iqr = q3 - q1
    return go.Box(
        x=[category],
        q1=[q1],
        median=[median],
        q3=[q3],
        lowerfence=[data[data >= q1 - 1.5 * iqr].min()],
        upperfence=[data[data <= q3 + 1.5 * iqr].max()],
        boxpoints=False,
        marker={"color": color},
        line={"color": color},
        name=label,
    )
