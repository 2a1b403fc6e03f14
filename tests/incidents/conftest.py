"""People in each role, a flag someone already changed, and a break-glass switch.

`role_user` comes from tests/conftest.py. Flags are made through the flag services (the one write
path); the break-glass switch is written directly, as an administrator would set it up.
"""

from collections.abc import Callable

import pytest

from incidents.models import BreakGlassSwitch, Incident
from incidents.services import incident_declare
from rollouts.models import Flag
from rollouts.services.flags import flag_change, flag_create


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    # Every test makes several users; PBKDF2 at full strength would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def commander(role_user):
    return role_user("commander", username="ada")


@pytest.fixture
def commander_2(role_user):
    return role_user("commander", username="bob")


@pytest.fixture
def responder(role_user):
    return role_user("responder", username="cy")


@pytest.fixture
def viewer(role_user):
    return role_user("viewer", username="dee")


@pytest.fixture
def tpm(role_user):
    return role_user("tpm", username="eve")


@pytest.fixture
def incident(commander) -> Incident:
    """A SEV2 declared by `commander`, who commands it: timeline #1 status, #2 role."""
    return incident_declare(title="Checkout 500s in eu-west", severity=2, actor=commander)


@pytest.fixture
def changed_flag(tpm) -> Flag:
    """checkout-v2: v1 created off, v2 turned on for 50 % by the TPM before the incident."""
    flag_create(key="checkout-v2", description="", kind="release", owner="web", actor=tpm)
    flag_change(
        flag_key="checkout-v2",
        changes={"enabled": True, "rollout_percentage": 50},
        actor=tpm,
        reason="ramp to 50%",
        source="board",
    )
    return Flag.objects.get(key="checkout-v2")


@pytest.fixture
def make_switch() -> Callable[..., BreakGlassSwitch]:
    """`make_switch(allowed=[user])`: a kill-switch flag, off at v1, pre-authorized for incidents."""

    def make(*, allowed: tuple = (), label: str = "shed load") -> BreakGlassSwitch:
        flag = flag_create(
            key="shed-load", description="", kind=Flag.Kind.KILL_SWITCH, owner="sre", actor=None
        )
        switch = BreakGlassSwitch.objects.create(flag=flag, label=label)
        switch.allowed_users.set(allowed)
        return switch

    return make
