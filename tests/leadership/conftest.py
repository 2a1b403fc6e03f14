"""The plan fixture of the rollouts tests, shared: leadership pages read plans."""

from tests.rollouts.conftest import make_plan

__all__ = ["make_plan"]
