from celery import shared_task

from stepwise.demo import demo_traffic_emit
from stepwise.health import worker_heartbeat_record


@shared_task(name="stepwise.tasks.worker_heartbeat", bind=True, ignore_result=True)
def worker_heartbeat(self) -> None:
    worker_heartbeat_record(hostname=self.request.hostname or "unknown")


@shared_task(name="stepwise.tasks.demo_traffic", ignore_result=True)
def demo_traffic() -> None:
    demo_traffic_emit()
