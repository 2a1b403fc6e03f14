from django.db import models


class Stream(models.Model):
    """A named feed browsers subscribe to (`ledger`, `flags`, `plan:7`, `incident:3`).

    The row is locked while a frame is rendered and numbered, so sequence order is commit order
    and a later number never carries an older state.
    """

    name = models.CharField(max_length=100, primary_key=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    state_digest = models.CharField(
        max_length=64,
        blank=True,
        help_text="Digest of the last state pushed: the same is not pushed twice.",
    )

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seq}"


class StreamEvent(models.Model):
    """What one pushed frame was drawn from, so a browser that reconnects can replay what it
    missed: the state as it is now, and the rows named by `refs`. No HTML is kept; each stream
    keeps its newest `LIVE_EVENTS_KEPT` events."""

    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="events", db_column="stream_name"
    )
    seq = models.PositiveBigIntegerField()
    event = models.CharField(
        max_length=200, help_text="The changes this frame shows, comma-separated."
    )
    state = models.BooleanField(default=False)
    refs = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="stream_event_seq_unique")
        ]
        ordering = ["stream", "seq"]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq} {self.event}"
