"""The compiled flag configuration each serving process holds in memory.

While the invalidation channel is live (core.invalidation), a request is answered from memory
with no database round trip: every flag change announces its new revision, and a process that
heard of a revision newer than the one it holds compiles again before answering. Without the
channel, every request reads the revision (one indexed single-row query) first, so a change is
served by the next request after it commits, whichever process answers it.
"""

import threading

from django.db import connection

from core.invalidation import invalidation_live, invalidation_on
from rollouts.evaluation import GENERAL, EvaluationError, FlagConfig, config_compile
from rollouts.models import Flag, FlagConfigRevision, FlagVersion

FLAGS_TOPIC = "flags"
_MAX_COMPILE_ATTEMPTS = 5

_config = FlagConfig(revision=-1, flags={})
_compile_lock = threading.Lock()
# The newest revision this process has heard of; None: unknown, ask the database.
_announced: int | None = None
_REVISION_SQL = f"SELECT revision FROM {FlagConfigRevision._meta.db_table} WHERE id = 1"


def config_cache_clear() -> None:
    """Drop this process's compiled configuration (tests roll the database back under it)."""
    global _config, _announced
    _config = FlagConfig(revision=-1, flags={})
    _announced = None


def _heard(revision: int | None) -> None:
    global _announced
    with _compile_lock:
        if revision is None:
            _announced = None
        else:
            _announced = max(_announced if _announced is not None else -1, revision)


def _revision() -> int:
    # A fixed statement skips the ORM's per-call compilation, which cost more than the query
    # itself (bench/RESULTS.md).
    with connection.cursor() as cursor:
        cursor.execute(_REVISION_SQL)
        row = cursor.fetchone()
    return row[0] if row else 0


def _changed(facts: dict) -> None:
    revision = facts.get("revision")
    _heard(revision)
    if invalidation_live() and revision is not None:
        # A serving process compiles as soon as it hears (the listener's thread), so requests
        # keep answering from memory instead of queueing for the database.
        config_current(revision=revision)


invalidation_on(FLAGS_TOPIC, _changed, check=lambda: config_current())


def config_cached() -> FlagConfig | None:
    """The configuration from memory when it is known to be current, else None (no I/O)."""
    config, announced = _config, _announced
    if not invalidation_live() or announced is None or config.revision < announced:
        return None
    return config


def _compile_at(revision: int) -> FlagConfig:
    """The configuration exactly at a revision: read the flags, then check nobody committed a
    newer revision in between (each statement sees its own snapshot under READ COMMITTED)."""
    for _ in range(_MAX_COMPILE_ATTEMPTS):
        versions = list(
            FlagVersion.objects.select_related("flag").filter(
                pk__in=Flag.objects.values("current_id")
            )
        )
        after = _revision()
        if after == revision:
            return config_compile(revision=revision, versions=versions)
        revision = after
    raise EvaluationError(GENERAL, "flag configuration changed too often to read; retry")


def config_current(*, revision: int | None = None) -> FlagConfig:
    """The compiled configuration at the committed revision (reads the database), or at least at
    an announced `revision`."""
    global _config
    if revision is None:
        revision = _revision()
        # Exactly the committed one: tests roll the database, and its revision, back.
        current = lambda config: config.revision == revision  # noqa: E731
    else:
        current = lambda config: config.revision >= revision  # noqa: E731
    _heard(revision)
    if current(_config):
        return _config
    with _compile_lock:
        if not current(_config):
            _config = _compile_at(revision)
        return _config
