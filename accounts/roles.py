"""The four roles and what each may do. Every role reads everything; the differences are writes."""

from django.contrib.auth.models import Group, Permission

DOMAIN_APPS = ("ledger", "signals", "rollouts", "incidents")

ROLE_WRITES: dict[str, tuple[str, ...]] = {
    "viewer": (),
    "responder": ("ledger.record_entry", "incidents.narrate"),
    "commander": (
        "ledger.record_entry",
        "incidents.narrate",
        "incidents.command",
        "incidents.break_glass",
        "rollouts.flip_flag",
    ),
    "tpm": (
        "ledger.record_entry",
        "rollouts.manage_plan",
        "rollouts.flip_flag",
        "signals.manage_slo",
        "signals.manage_metric_source",
    ),
}
ROLES = tuple(ROLE_WRITES)


def role_permissions(role: str) -> list[Permission]:
    views = Permission.objects.filter(
        content_type__app_label__in=DOMAIN_APPS, codename__startswith="view_"
    )
    wanted = ROLE_WRITES[role]
    writes = [
        p
        for p in Permission.objects.filter(
            codename__in=[w.split(".")[1] for w in wanted]
        ).select_related("content_type")
        if f"{p.content_type.app_label}.{p.codename}" in wanted
    ]
    return [*views, *writes]


def roles_sync() -> None:
    """Create the role groups and grant exactly their permissions. Idempotent."""
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(role_permissions(role))


def roles_sync_after_migrate(**kwargs) -> None:
    roles_sync()


def user_roles(user) -> list[str]:
    if not getattr(user, "is_authenticated", False):
        return []
    return [name for name in user.groups.values_list("name", flat=True) if name in ROLE_WRITES]
