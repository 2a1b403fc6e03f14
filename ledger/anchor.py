"""The ledger's keys outside its table.

Whoever can write the table can rewrite a hash chain consistently: re-hash after an edit, cut
the newest entries, truncate it. Two things they cannot do without the ledger key
(`STEPWISE_LEDGER_ANCHOR_KEY`, kept out of the database): compute an entry's MAC, and sign an
anchor, the chain head (seq, hash) written after every commit to a file under the var directory
and, with Redis, to Redis. `ledger_verify` checks both.
"""

import fcntl
import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


def _sign(message: str) -> str:
    key = settings.LEDGER_ANCHOR_KEY.encode()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def entry_mac(entry_hash: str) -> str:
    """The MAC an entry with this hash must carry."""
    return _sign(f"entry:{entry_hash}")


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    mac: str
    where: str = ""

    @property
    def genuine(self) -> bool:
        return hmac.compare_digest(self.mac, _sign(f"anchor:{self.seq}:{self.hash}"))


def _anchor_file() -> Path:
    return Path(settings.LEDGER_ANCHOR_FILE)


def _parse(raw: str | bytes | None, where: str) -> Anchor | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Anchor(int(data["seq"]), str(data["hash"]), str(data["mac"]), where)
    except (ValueError, KeyError, TypeError):
        return Anchor(0, "", "", where)  # unreadable: not genuine, reported as such


def _write_file(anchor: Anchor, document: str) -> None:
    path = _anchor_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # processes append concurrently: keep the highest head
        current = _parse(path.read_text() if path.exists() else None, "file")
        if current is not None and current.genuine and current.seq >= anchor.seq:
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(document)
        os.replace(temporary, path)


def anchor_record(*, seq: int, entry_hash: str) -> None:
    """After a commit: sign the chain head and keep it outside the table. Never raises: a failed
    anchor write costs detection of a later cut, not the change that was just committed."""
    anchor = Anchor(seq, entry_hash, _sign(f"anchor:{seq}:{entry_hash}"))
    document = json.dumps({"seq": anchor.seq, "hash": anchor.hash, "mac": anchor.mac})
    try:
        _write_file(anchor, document)
    except OSError:
        logger.exception("ledger anchor: could not write %s", _anchor_file())
    if settings.REDIS_URL:
        try:
            current = _parse(cache.get(settings.LEDGER_ANCHOR_CACHE_KEY), "redis")
            if current is None or not current.genuine or current.seq < anchor.seq:
                cache.set(settings.LEDGER_ANCHOR_CACHE_KEY, document, timeout=None)
        except Exception:  # Redis down: the file still holds the anchor
            logger.warning("ledger anchor: Redis unavailable, anchored in the file only")


def anchors_read() -> list[Anchor]:
    """Every anchor found (file, Redis), genuine or not."""
    found = []
    path = _anchor_file()
    if path.exists():
        found.append(_parse(path.read_text(), "file"))
    if settings.REDIS_URL:
        try:
            found.append(_parse(cache.get(settings.LEDGER_ANCHOR_CACHE_KEY), "redis"))
        except Exception:
            logger.warning("ledger anchor: Redis unavailable, read the file only")
    return [a for a in found if a is not None]
