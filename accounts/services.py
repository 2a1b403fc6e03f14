import copy
import hashlib
import re
import secrets
import threading
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.utils import timezone

from accounts.models import SCOPES, ApiToken
from accounts.roles import MACHINE_ROLES
from core.errors import InvalidInput, NotFound
from core.invalidation import invalidation_live, invalidation_on, invalidation_publish
from ledger.services import ledger_append

TOKEN_PREFIX = "sw_"
SERVICE_USER_PREFIX = "svc-"
INTEGRATION_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
AUTH_TOPIC = "auth"
_LAST_USED_RESOLUTION = timedelta(minutes=1)
# A token's grant (its user, scopes, permissions) is answered from memory while this process
# hears every token, role and permission change, and read again at least this often: the bound on
# a change whose announcement was lost (Redis restarted between commit and publish).
TOKEN_CACHE_SECONDS = 30.0
_TOKEN_CACHE_SIZE = 10_000

_tokens: dict[str, tuple[ApiToken, float]] = {}  # digest -> (token with user and perms, read at)
_tokens_lock = threading.Lock()
_tokens_generation = 0


def _tokens_forget(facts: dict) -> None:
    global _tokens_generation
    with _tokens_lock:
        _tokens_generation += 1
        _tokens.clear()


invalidation_on(AUTH_TOPIC, _tokens_forget)


def auth_changed() -> None:
    """Once the current transaction commits, every process reads tokens and permissions afresh
    (called by accounts.receivers on every token, user, group and permission change)."""
    invalidation_publish(AUTH_TOPIC)


class TokenRefused(InvalidInput):
    pass


def _digest(raw: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; a slow KDF would add nothing but latency.
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(
    *,
    user: AbstractBaseUser,
    name: str,
    scopes: list[str],
    expires_in_days: int | None = None,
    actor: AbstractBaseUser | None = None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its secret, which is never stored. Ledger: api_token.created."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise TokenRefused(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}"
        )
    if not scopes:
        raise TokenRefused("a token needs at least one scope")
    if not name.strip():
        raise TokenRefused("a token needs a name")
    if ApiToken.objects.filter(user=user, name=name).exists():
        # Revoked tokens keep their names: the ledger never shows two secrets under one name.
        raise TokenRefused(
            f"{user.get_username()} already has a token named {name!r} (revoked or not); "
            "give the new one another name"
        )
    if expires_in_days is not None and expires_in_days <= 0:
        raise TokenRefused("expiry must be a positive number of days")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw[:10],
        digest=_digest(raw),
        scopes=sorted(set(scopes)),
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    ledger_append(
        action="api_token.created",
        subject=token,
        actor=actor,
        actor_label=None if actor else "manage.py",
        payload={
            "name": name,
            "user": user.get_username(),
            "scopes": token.scopes,
            "prefix": token.prefix,
        },
    )
    return token, raw


@transaction.atomic
def integration_token_create(
    *,
    role: str,
    name: str,
    expires_in_days: int | None = None,
    actor: AbstractBaseUser | None,
) -> tuple[ApiToken, str]:
    """A token for an integration: issued to the service user `svc-<role>-<name>` (created here,
    holding only that machine role, when it does not exist) with exactly the role's scopes.
    Returns the token and its secret, which is never stored. Ledger: service_user.created (when
    created), api_token.created."""
    machine_role = MACHINE_ROLES.get(role)
    if machine_role is None:
        raise TokenRefused(
            f"{role!r} is not an integration role (retired or never one); "
            f"choose one of {', '.join(MACHINE_ROLES)}"
        )
    if not INTEGRATION_NAME.fullmatch(name):
        raise TokenRefused(
            "the name must be 1 to 63 lowercase letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, e.g. node-exporter-eu (got {name!r})"
        )
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise TokenRefused(f"the {role} role has no group yet: run `manage.py migrate`")
    username = f"{SERVICE_USER_PREFIX}{role}-{name}"
    # get_or_create: two admins creating the same integration at once get one service user.
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()  # a service user never signs in to a page
        user.save(update_fields=["password"])
        user.groups.set([group])
        ledger_append(
            action="service_user.created",
            subject=user,
            actor=actor,
            actor_label=None if actor else "manage.py",
            payload={"username": username, "role": role},
        )
    elif user.has_usable_password() or list(user.groups.all()) != [group] or not user.is_active:
        raise TokenRefused(
            f"{username} exists but is not an active service user holding only the {role} role; "
            "choose another name"
        )
    return api_token_create(
        user=user,
        name=name,
        scopes=list(machine_role.scopes),
        expires_in_days=expires_in_days,
        actor=actor,
    )


@transaction.atomic
def api_token_revoke(
    *, token_id: int, actor: AbstractBaseUser | None = None, reason: str = ""
) -> ApiToken:
    """Revoke a token; revoking twice is a no-op. Ledger: api_token.revoked (with the reason)."""
    token = ApiToken.objects.select_for_update().filter(pk=token_id).first()
    if token is None:
        raise NotFound(f"no API token with id {token_id}")
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    payload = {"name": token.name, "user": token.user.get_username(), "prefix": token.prefix}
    if reason:
        payload["reason"] = reason
    ledger_append(
        action="api_token.revoked",
        subject=token,
        actor=actor,
        actor_label=None if actor else "manage.py",
        payload=payload,
    )
    return token


def _permissions_load(user: AbstractBaseUser) -> None:
    """Fill ModelBackend's per-object permission cache with one query instead of its two.

    The cache lives on this request's user object only, so a permission taken away is refused
    on the next request, as without it. Superusers are left alone: has_perm never asks them.
    """
    if user.is_superuser:
        return
    fields = ("content_type__app_label", "codename")
    # order_by(): Permission's default ordering is not allowed inside a UNION on SQLite.
    rows = (
        Permission.objects.filter(user=user)
        .order_by()
        .values_list(*fields)
        .union(Permission.objects.filter(group__user=user).order_by().values_list(*fields))
    )
    # The name and format ModelBackend.get_all_permissions() reads: {"app_label.codename"}.
    user._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}


def _detached(token: ApiToken) -> ApiToken:
    # Each request gets its own copies: nothing one request sets on its user reaches another.
    mine = copy.copy(token)
    mine.user = copy.copy(token.user)
    return mine


def api_token_cached(*, raw: str) -> ApiToken | None:
    """The usable token for a presented secret from this process's memory, or None when memory
    cannot answer (not held, too old, or changes are not being heard): then ask
    `api_token_authenticate`. No I/O: safe inside an event loop."""
    if not invalidation_live():
        return None
    held = _tokens.get(_digest(raw))
    if held is None or time.monotonic() - held[1] > TOKEN_CACHE_SECONDS:
        return None
    token = held[0]
    if not token.is_usable():
        return None
    return _detached(token)


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The usable token for a presented secret, or None; token.user has its permissions loaded.

    From memory while every process hears token and permission changes (a revoked token is
    refused as soon as the revocation is heard); otherwise from the database on every request.
    Touches last_used_at at most once a minute, when the token is read from the database.
    """
    if not raw.startswith(TOKEN_PREFIX):
        return None
    cached = api_token_cached(raw=raw)
    if cached is not None:
        return cached
    generation = _tokens_generation
    digest = _digest(raw)
    token = ApiToken.objects.select_related("user").filter(digest=digest).first()
    now = timezone.now()
    if token is None or not token.is_usable(now) or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    _permissions_load(token.user)
    with _tokens_lock:
        # Not kept when a change was heard while reading: it may predate that change.
        if invalidation_live() and generation == _tokens_generation:
            if len(_tokens) >= _TOKEN_CACHE_SIZE:
                _tokens.clear()
            _tokens[digest] = (token, time.monotonic())
    return _detached(token)
