"""The roles and what each may do.

Human roles read everything; the differences are writes. Machine roles (integrations: an
exporter, Alertmanager, a deploy pipeline, a flag client) are held by service users, read
nothing they do not need, and name the one API scope their tokens get.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission

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


@dataclass(frozen=True)
class MachineRole:
    purpose: str
    permissions: tuple[str, ...]  # exactly what its API needs (core.http.api_endpoint)
    scopes: tuple[str, ...]  # what each of its tokens is issued with (accounts.models.SCOPES)


MACHINE_ROLES: dict[str, MachineRole] = {
    "exporter": MachineRole(
        purpose="pushes metric samples to /api/metrics/ingest",
        permissions=("signals.add_sample",),
        scopes=("metrics:write",),
    ),
    "alertmanager": MachineRole(
        purpose="posts alerts to /api/incidents/alertmanager",
        permissions=("incidents.narrate",),
        scopes=("incidents:write",),
    ),
    "deployer": MachineRole(
        purpose="reports deploys to /api/deploys",
        permissions=("rollouts.view_step",),
        scopes=("deploys:write",),
    ),
    "scraper": MachineRole(
        purpose="a Prometheus scraping Stepwise's own /metrics",
        permissions=(),
        scopes=("metrics:read",),
    ),
    "flag-client": MachineRole(
        purpose="evaluates feature flags over OFREP (/ofrep/v1/…)",
        permissions=("rollouts.view_flag",),
        scopes=("flags:evaluate",),
    ),
}


def _permissions_named(names: tuple[str, ...]) -> list[Permission]:
    return [
        p
        for p in Permission.objects.filter(
            codename__in=[n.split(".")[1] for n in names]
        ).select_related("content_type")
        if f"{p.content_type.app_label}.{p.codename}" in names
    ]


def role_permissions(role: str) -> list[Permission]:
    if role in MACHINE_ROLES:
        return _permissions_named(MACHINE_ROLES[role].permissions)
    views = Permission.objects.filter(
        content_type__app_label__in=DOMAIN_APPS, codename__startswith="view_"
    )
    return [*views, *_permissions_named(ROLE_WRITES[role])]


def roles_sync() -> None:
    """Create the role groups, human and machine, and grant exactly their permissions. Idempotent."""
    for role in (*ROLES, *MACHINE_ROLES):
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(role_permissions(role))


def roles_sync_after_migrate(**kwargs) -> None:
    roles_sync()


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> list[str]:
    """The human roles a signed-in user holds (machine roles belong to service users)."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [name for name in user.groups.values_list("name", flat=True) if name in ROLE_WRITES]


def user_is_admin(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """The admin is a superuser (seed_demo, `manage.py createsuperuser`), not a role group."""
    return bool(getattr(user, "is_authenticated", False) and user.is_superuser)
