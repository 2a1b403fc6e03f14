"""Fixtures shared from other apps' tests: the plan fixture of the rollouts tests (leadership
pages read plans) and the fake Prometheus HTTP API (metric sources are tested against it)."""

from tests.rollouts.conftest import make_plan
from tests.signals.test_prometheus import fake_api

__all__ = ["fake_api", "make_plan"]
