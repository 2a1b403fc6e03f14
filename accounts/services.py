import copy
import hashlib
import secrets
import threading
import time
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser, Permission
from django.db import transaction
from django.utils import timezone

from accounts.models import SCOPES, ApiToken
from core.invalidation import invalidation_live, invalidation_on, invalidation_publish
from ledger.services import ledger_append

TOKEN_PREFIX = "sw_"
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


class TokenRefused(ValueError):
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
        raise TokenRefused(f"{user.get_username()} already has a token named {name!r}")
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
def api_token_revoke(*, token_id: int, actor: AbstractBaseUser | None = None) -> ApiToken:
    """Revoke a token; revoking twice is a no-op. Ledger: api_token.revoked."""
    token = ApiToken.objects.select_for_update().get(pk=token_id)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    ledger_append(
        action="api_token.revoked",
        subject=token,
        actor=actor,
        actor_label=None if actor else "manage.py",
        payload={"name": token.name, "user": token.user.get_username(), "prefix": token.prefix},
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
