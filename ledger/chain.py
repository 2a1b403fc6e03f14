"""The hash chain: canonical serialization, hashing and verification. Pure functions."""

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free JSON: the same bytes from SQLite's text and PostgreSQL's jsonb."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_digest(
    *,
    seq: int,
    created_at: datetime,
    actor_id: int | None,
    actor_label: str,
    action: str,
    subject_type: str,
    subject_id: str,
    plan_id: int | None,
    step_id: int | None,
    incident_id: int | None,
    payload: Any,
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "created_at": created_at.isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "actor_label": actor_label,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "plan_id": plan_id,
        "step_id": step_id,
        "incident_id": incident_id,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    entry_id: int | None
    reason: str

    def __str__(self) -> str:
        if self.entry_id is None:
            return f"ledger seq {self.seq}: {self.reason}"
        return f"ledger entry seq {self.seq} (id {self.entry_id}): {self.reason}"


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def chain_verify(entries: Iterable[Any], *, mac: Callable[[str], str]) -> ChainReport:
    """Walk entries in ascending seq; stop at the first one whose link, content or MAC is wrong
    (`mac(hash)` is the MAC an entry with that hash must carry)."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    for entry in entries:
        if entry.seq != expected_seq:
            reason = f"sequence gap: expected seq {expected_seq}, found {entry.seq} (an entry was removed)"
            return ChainReport(checked, ChainBreak(expected_seq, entry.pk, reason))
        if entry.prev_hash != expected_prev:
            return ChainReport(
                checked,
                ChainBreak(
                    entry.seq, entry.pk, "prev_hash does not match the previous entry's hash"
                ),
            )
        computed = entry_digest(
            seq=entry.seq,
            created_at=entry.created_at,
            actor_id=entry.actor_id,
            actor_label=entry.actor_label,
            action=entry.action,
            subject_type=entry.subject_type,
            subject_id=entry.subject_id,
            plan_id=entry.plan_id,
            step_id=entry.step_id,
            incident_id=entry.incident_id,
            payload=entry.payload,
            prev_hash=entry.prev_hash,
        )
        if computed != entry.hash:
            return ChainReport(
                checked,
                ChainBreak(
                    entry.seq,
                    entry.pk,
                    "content was altered: stored hash does not match its fields",
                ),
            )
        if not hmac.compare_digest(entry.mac, mac(entry.hash)):
            reason = "MAC does not match: written without the ledger key (forged or re-hashed)"
            return ChainReport(checked, ChainBreak(entry.seq, entry.pk, reason))
        expected_prev, expected_seq, checked = entry.hash, expected_seq + 1, checked + 1
    return ChainReport(checked, None)
