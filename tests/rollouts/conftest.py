from collections.abc import Callable

import pytest

from rollouts import ofrep
from rollouts.flag_config import config_cache_clear
from rollouts.models import Plan, Step, StepTarget, Target
from rollouts.services.flags import flag_create
from tests.asgi_client import AsgiClient

VERIFIED = {
    "pass_condition": "error_rate < 0.01",
    "fail_condition": "error_rate > 0.02",
    "on_fail": "pause_plan",
    "measurements": {
        "error_rate": {
            "metric": "http_errors",
            "aggregation": "ratio",
            "ratio_of": "sum",
            "denominator": {"metric": "http_requests"},
            "window": "5m",
        }
    },
}


@pytest.fixture
def make_plan(db) -> Callable[..., Plan]:
    """`make_plan([{"key": "a"}, {"key": "b", "deps": ["a"], "targets": ["eu"]}], status="active")`.
    Rows are written directly: this is test setup, not a state change under test."""

    def make(steps: list[dict], *, status: str = "active", key: str = "p") -> Plan:
        plan = Plan.objects.create(key=key, name=key.upper(), owner="platform", status=status)
        made: dict[str, Step] = {}
        for position, spec in enumerate(steps, start=1):
            flag = None
            if spec.get("flag"):
                from rollouts.models import Flag

                flag = Flag.objects.filter(key=spec["flag"]).first() or flag_create(
                    key=spec["flag"], description="", kind="release", owner="web", actor=None
                )
            fields = {} if spec.get("unverified") else VERIFIED
            step = Step.objects.create(
                plan=plan,
                key=spec["key"],
                title=spec["key"],
                owner_team=spec.get("team", "platform"),
                kind=spec.get("kind", "flag_ramp" if flag else "manual"),
                position=position,
                lockstep_group=spec.get("lockstep", ""),
                service=spec.get("service", ""),
                flag=flag,
                flag_percentage=spec.get("percentage"),
                status=spec.get("status", "pending"),
                **fields,
            )
            for name in spec.get("targets", []):
                StepTarget.objects.create(
                    step=step, target=Target.objects.get_or_create(name=name)[0]
                )
            step.depends_on.set([made[d] for d in spec.get("deps", [])])
            made[spec["key"]] = step
        return plan

    return make


@pytest.fixture
def example_slos(db) -> None:
    """The SLO the example plan's budget gates name (`examples/openslo/login-availability.yaml`)."""
    from pathlib import Path

    from signals.openslo import openslo_parse
    from signals.services import slo_save

    path = Path(__file__).resolve().parents[2] / "examples" / "openslo" / "login-availability.yaml"
    for spec in openslo_parse(path.read_text()).slos:
        slo_save(spec=spec)


@pytest.fixture(autouse=True)
def _fresh_flag_caches():
    """Each test rolls the database back, so revision numbers repeat with different flags: this
    process forgets what it compiled, and the revisions another test's tokens were served."""
    config_cache_clear()
    ofrep._fetches.take()
    yield
    config_cache_clear()


@pytest.fixture
def ofrep_client() -> AsgiClient:
    """OFREP is served ahead of Django: requests go to its ASGI application."""
    return AsgiClient(ofrep.ofrep_app)


@pytest.fixture
def recorded() -> Callable[[], None]:
    """Run the worker task that records what consumers were served, as the flusher would."""
    from stepwise.celery import app

    def flush() -> None:
        app.conf.task_always_eager = True
        try:
            ofrep.fetches_flush()
        finally:
            app.conf.task_always_eager = False

    return flush
