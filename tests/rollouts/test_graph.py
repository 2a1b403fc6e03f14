import pytest

from rollouts.charts import STACK_GAP, dependency_graph
from rollouts.graph import critical_path, find_cycle, topological_order
from rollouts.models import Step


def test_find_cycle__three_step_loop__named_in_order():
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}) == ["a", "c", "b", "a"]


def test_find_cycle__self_dependency__named():
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_find_cycle__diamond__none():
    assert find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_topological_order__independent_steps__declared_position_breaks_ties():
    order = topological_order(
        {"deploy": ["roles"], "roles": [], "expand": []}, {"roles": 1, "expand": 2, "deploy": 3}
    )
    assert order == ["roles", "expand", "deploy"]


def test_topological_order__cycle__error_names_it():
    with pytest.raises(ValueError, match="a -> b -> a"):
        topological_order({"a": ["b"], "b": ["a"]}, {})


def test_critical_path__longest_chain_wins():
    graph = {
        "roles": [],
        "expand": [],
        "deploy": ["roles", "expand"],
        "backfill": ["deploy"],
        "gw": ["deploy"],
        "ramp": ["gw", "backfill"],
        "side": [],
    }
    path = critical_path(graph, {"backfill": 3})
    assert path[-1] == "ramp" and "backfill" in path and "gw" not in path


def test_dependency_graph__two_steps_of_one_team_at_one_depth__stacked_clear_of_the_next_lane():
    steps = [
        Step(pk=1, key="roles", owner_team="identity", position=1, status="done"),
        Step(pk=2, key="probe", owner_team="identity", position=2, status="ready"),
        Step(pk=3, key="deploy", owner_team="accounts", position=3, status="pending"),
    ]

    fig = dependency_graph(steps, {3: [1]})

    y = {
        key: ys
        for trace in fig.data
        if trace.mode == "markers+text"
        for key, ys in zip(trace.text, trace.y, strict=True)
    }
    assert y["probe"] - y["roles"] == STACK_GAP
    assert y["roles"] > y["deploy"]  # accounts' lane sorts first, below identity's stack
    ticks = dict(zip(fig.layout.yaxis.ticktext, fig.layout.yaxis.tickvals, strict=True))
    assert ticks["identity"] == (y["roles"] + y["probe"]) / 2  # the label sits mid-stack
    assert fig.layout.yaxis.range[1] > y["probe"]
