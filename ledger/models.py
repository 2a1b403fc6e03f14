from django.conf import settings
from django.db import models


class LedgerEntry(models.Model):
    """One immutable fact about the path a change took. Written only by `ledger_append`.

    `hash` covers a canonical serialization of every other field plus `prev_hash`, so an edit
    or a deleted row anywhere breaks the chain from that point on (`manage.py verify_ledger`).
    """

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(
        max_length=150, help_text="who, as shown: a username, a token name or 'system'"
    )
    action = models.CharField(max_length=80, db_index=True)
    subject_type = models.CharField(max_length=80, db_index=True)
    subject_id = models.CharField(max_length=64, blank=True)
    plan_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    incident_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    mac = models.CharField(
        max_length=64, blank=True, help_text="HMAC of `hash` with the ledger key (ledger/anchor.py)"
    )

    class Meta:
        ordering = ["-seq"]
        verbose_name_plural = "ledger entries"
        permissions = [("record_entry", "Can record a manual entry (e.g. an out-of-band change)")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.subject_type}:{self.subject_id}"
