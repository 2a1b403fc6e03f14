import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepwise.settings")

app = Celery("stepwise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _announce_worker(sender, **kwargs) -> None:
    # /readyz should see a worker as soon as it can take tasks, not only after the first beat tick.
    sender.app.send_task("stepwise.tasks.worker_heartbeat")
