"""The fake Prometheus HTTP API of test_prometheus, for every signals test that needs one."""

from tests.signals.test_prometheus import fake_api

__all__ = ["fake_api"]
