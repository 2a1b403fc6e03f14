"""Plotly figures from selector output. Pure: data in, figure out."""

import itertools
from collections import defaultdict

import plotly.graph_objects as go

from rollouts.graph import critical_path, topological_order
from rollouts.models import Step

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
    lane = {team: i for i, team in enumerate(teams)}
    slot: dict[tuple[int, str], int] = defaultdict(int)
    pos: dict[int, tuple[float, float]] = {}
    for node in order:
        step = by_id[node]
        key = (depth[node], step.owner_team)
        pos[node] = (depth[node], lane[step.owner_team] + 0.28 * slot[key])
        slot[key] += 1
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
        height=max(260, 90 * len(teams) + 80),
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
            "range": [-0.6, len(teams) - 0.1],
        },
    )
    return fig


def figure_html(fig: go.Figure, *, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displayModeBar": False, "responsive": True},
    )
