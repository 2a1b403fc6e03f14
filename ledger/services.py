import json
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from ledger.anchor import anchor_record, entry_mac
from ledger.chain import GENESIS_HASH, canonical_json, entry_digest
from ledger.models import LedgerEntry
from live.broadcast import stream_touch

LEDGER_STREAM = "ledger"
# Any 64-bit constant: the PostgreSQL advisory lock that serializes appends across processes.
_APPEND_LOCK_KEY = 0x5354_4550_4C45_4447


class LedgerError(ValueError):
    pass


def _actor_fields(
    actor: AbstractBaseUser | AnonymousUser | None, actor_label: str | None
) -> tuple[int | None, str]:
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor.pk, actor_label or actor.get_username()
    return None, actor_label or "system"


def _lock_chain_head() -> None:
    # SQLite runs every transaction with BEGIN IMMEDIATE (settings), which already serializes writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK_KEY])


@transaction.atomic
def ledger_append(
    *,
    action: str,
    subject: Model | None = None,
    subject_type: str = "",
    subject_id: str | int = "",
    actor: AbstractBaseUser | AnonymousUser | None = None,
    actor_label: str | None = None,
    payload: dict[str, Any] | None = None,
    plan_id: int | None = None,
    step_id: int | None = None,
    incident_id: int | None = None,
) -> LedgerEntry:
    """Append one entry to the hash chain; the only writer of LedgerEntry.

    Side effects: takes the chain lock until the surrounding transaction commits; publishes
    `ledger.appended` to the `ledger` stream on commit.
    """
    if not action:
        raise LedgerError("a ledger entry needs an action")
    if subject is not None:
        subject_type = subject_type or subject._meta.label_lower
        subject_id = subject.pk
    if not subject_type:
        raise LedgerError("a ledger entry needs a subject")
    try:
        # Round-trip so the hash covers exactly what the database will hand back.
        normalized_payload = json.loads(canonical_json(payload or {}))
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"ledger payload is not plain JSON: {exc}") from exc
    actor_id, label = _actor_fields(actor, actor_label)

    _lock_chain_head()
    head = LedgerEntry.objects.order_by("-seq").values("seq", "hash").first()
    seq = head["seq"] + 1 if head else 1
    prev_hash = head["hash"] if head else GENESIS_HASH
    created_at = timezone.now()
    fields = {
        "seq": seq,
        "created_at": created_at,
        "actor_id": actor_id,
        "actor_label": label[:150],
        "action": action,
        "subject_type": subject_type,
        "subject_id": str(subject_id),
        "plan_id": plan_id,
        "step_id": step_id,
        "incident_id": incident_id,
        "payload": normalized_payload,
        "prev_hash": prev_hash,
    }
    digest = entry_digest(**fields)
    entry = LedgerEntry.objects.create(**fields, hash=digest, mac=entry_mac(digest))
    transaction.on_commit(lambda: anchor_record(seq=seq, entry_hash=digest))
    stream_touch(stream=LEDGER_STREAM, event="ledger.appended", ref=entry.seq)
    return entry


MANUAL_KINDS = {
    "note": "Note",
    "out_of_band_change": "Out-of-band change",
    "acknowledgement": "Acknowledgement",
}


def ledger_record_manual(
    *, actor: AbstractBaseUser, kind: str, subject: str, summary: str
) -> LedgerEntry:
    """A person records a fact the system could not see (a hand-made change, an acknowledgement)."""
    if kind not in MANUAL_KINDS:
        raise LedgerError(f"unknown entry kind {kind!r}")
    subject, summary = subject.strip(), summary.strip()
    if not summary:
        raise LedgerError("say what happened")
    return ledger_append(
        action=f"manual.{kind}",
        subject_type="manual",
        subject_id=subject[:64],
        actor=actor,
        payload={"summary": summary[:2000]},
    )
