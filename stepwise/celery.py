import os

from celery import Celery
from celery.signals import task_prerun, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepwise.settings")

app = Celery("stepwise")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _announce_worker(sender, **kwargs) -> None:
    # /readyz should see a worker as soon as it can take tasks, not only after the first beat tick.
    sender.app.send_task("stepwise.tasks.worker_heartbeat")


@task_prerun.connect
def _drop_dead_connections(**kwargs) -> None:
    """Workers keep their database connection across tasks (CELERY_DB_REUSE_MAX), and Celery's
    fixup never checks it: after a database restart every task failed on the dead connection
    until the worker was restarted. Before each task, a connection that errored, or that no
    longer answers, is closed, so the task opens a fresh one."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        if conn.errors_occurred or not conn.is_usable():
            conn.close()
