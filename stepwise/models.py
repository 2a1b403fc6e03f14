from django.db import models


class WorkerHeartbeat(models.Model):
    """Last time each Celery worker ran the heartbeat task: how /readyz knows a worker is alive."""

    hostname = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} @ {self.seen_at:%H:%M:%S}"
