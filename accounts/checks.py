"""Production refuses to serve while an account still has the published demo password."""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import Error, register
from django.db import DatabaseError
from django.db.models import Q

from accounts.signin import DEMO_PASSWORD, DEMO_USERNAMES


def demo_password_accounts() -> list[str]:
    """Active accounts, among the demo names, staff and superusers, whose password is the demo
    one. Checking every account would cost a password hash each; these are the ones seeding
    creates and the ones an attacker wants."""
    users = get_user_model().objects.filter(
        Q(username__in=DEMO_USERNAMES) | Q(is_staff=True) | Q(is_superuser=True), is_active=True
    )
    return sorted(u.get_username() for u in users if u.check_password(DEMO_PASSWORD))


@register("stepwise", deploy=False)
def demo_passwords_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not settings.PRODUCTION:
        return []
    try:
        found = demo_password_accounts()
    except DatabaseError:
        return []  # no tables yet (before migrate) or no database: /readyz reports that
    if not found:
        return []
    return [
        Error(
            f"account(s) {', '.join(found)} still have the published demo password",
            hint="change it (/password/ or `manage.py changepassword NAME`) or deactivate them",
            id="stepwise.E001",
        )
    ]
