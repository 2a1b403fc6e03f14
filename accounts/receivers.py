"""Who may do what changed: every process reads tokens and permissions afresh.

Receivers, not service calls, because these rows change from more places than Stepwise's own
services (the Django admin, `roles_sync`, a shell): a cached grant must never outlive any of them.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed, post_delete, post_save

from accounts.models import ApiToken
from accounts.services import auth_changed


def _changed(
    sender: type, action: str = "post_", update_fields: object = None, **_: object
) -> None:
    # m2m_changed fires before and after a change; a login saves only last_login.
    if action.startswith("post_") and update_fields != frozenset({"last_login"}):
        auth_changed()


def connect() -> None:
    user_model = get_user_model()
    for model in (user_model, Group, Permission, ApiToken):
        post_save.connect(
            _changed, sender=model, dispatch_uid=f"auth-changed-save-{model.__name__}"
        )
        post_delete.connect(
            _changed, sender=model, dispatch_uid=f"auth-changed-delete-{model.__name__}"
        )
    for through in (
        user_model.groups.through,
        user_model.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            _changed, sender=through, dispatch_uid=f"auth-changed-{through.__name__}"
        )
