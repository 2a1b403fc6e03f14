import pytest

from rollouts.graph import critical_path, find_cycle, topological_order


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
