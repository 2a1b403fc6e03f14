from django.db import models


class Stream(models.Model):
    """A named feed browsers subscribe to (`ledger`, `flags`, `plan:7`, `incident:3`).

    The row is locked while an event is numbered, so sequence order is commit order.
    """

    name = models.CharField(max_length=100, primary_key=True)
    last_seq = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seq}"


class StreamEvent(models.Model):
    """A rendered update, kept so a browser that reconnects can replay what it missed."""

    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="events", db_column="stream_name"
    )
    seq = models.PositiveBigIntegerField()
    event = models.CharField(max_length=80)
    html = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="stream_event_seq_unique")
        ]
        ordering = ["stream", "seq"]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq} {self.event}"
