"""Run everything Stepwise needs in one foreground command; Ctrl-C stops all of it."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.signin import DEMO_PASSWORD
from stepwise.management.commands.seed_demo import DEMO_USERS

# A worker that keeps dying (a bad deploy, a database that refuses it) is not restarted forever:
# after this many restarts within RESTART_WINDOW_SECONDS the whole stack stops, loudly.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0


def _metrics_env(web_workers: int) -> dict[str, str] | None:
    """Several uvicorn workers share their /metrics counts through files in one directory,
    emptied before they start (docs/operations.md). One worker needs none; nor does an operator's
    own PROMETHEUS_MULTIPROC_DIR."""
    if web_workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = Path(settings.VAR_DIR) / "prometheus-multiproc"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}


class Command(BaseCommand):
    help = "Serve HTTP and websockets (uvicorn) with a Celery worker and beat, until interrupted."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("STEPWISE_HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("STEPWISE_PORT", "8000"))
        )
        parser.add_argument(
            "--web-workers", type=int, default=1, help="ASGI server processes (Redis mode only)"
        )
        parser.add_argument(
            "--celery-concurrency", type=int, default=2, help="worker processes (Redis mode only)"
        )

    def handle(
        self, *args, host: str, port: int, web_workers: int, celery_concurrency: int, **options
    ) -> None:
        py = sys.executable
        embedded = not settings.REDIS_URL
        if embedded and web_workers != 1:
            self.stderr.write(
                "the in-memory channel layer lives in one process: --web-workers ignored without REDIS_URL"
            )
            web_workers = 1
        web = [
            py,
            "-m",
            "uvicorn",
            "stepwise.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(web_workers),
            "--no-access-log" if not settings.DEBUG else "--access-log",
        ]
        if embedded:
            # One solo worker with embedded beat: nothing to install, one process to watch.
            workers = [
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "stepwise",
                    "worker",
                    "-B",
                    "--pool",
                    "solo",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    settings.CELERY_BEAT_SCHEDULE_FILENAME,
                ]
            ]
        else:
            workers = [
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "stepwise",
                    "worker",
                    "--concurrency",
                    str(celery_concurrency),
                    "--loglevel",
                    "INFO",
                ],
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "stepwise",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    settings.CELERY_BEAT_SCHEDULE_FILENAME,
                ],
            ]
        web_env = _metrics_env(web_workers)
        start = lambda cmd, env=None: subprocess.Popen(cmd, start_new_session=True, env=env)  # noqa: E731
        children = [start(web, web_env), *(start(cmd) for cmd in workers)]

        mode = (
            "embedded (SQLite, in-memory channel layer, filesystem broker)"
            if embedded
            else "PostgreSQL/Redis"
        )
        db = settings.DATABASES["default"]
        self.stdout.write(
            self.style.SUCCESS(
                f"\nStepwise is running at http://{host}:{port}/  [{mode}; database {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}]"
            )
        )
        if not settings.PRODUCTION:
            self.stdout.write(
                "Demo logins (password "
                + DEMO_PASSWORD
                + "): "
                + ", ".join(f"{u} ({DEMO_USERS[u][1]})" for u in DEMO_USERS)
                + ", admin"
            )
        self.stdout.write("Ctrl-C stops the server and its workers.\n")

        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        restarts: list[float] = []
        while not stopping:
            for i, child in enumerate(children):
                if child.poll() is None or stopping:
                    continue
                name = " ".join(child.args[2:5])
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_SECONDS]
                # The web server exiting is the stack exiting; a worker or beat dying is a
                # fault to recover from: breaches are only acted on while a worker runs.
                if i == 0 or len(restarts) >= MAX_RESTARTS:
                    why = "" if i == 0 else f" ({len(restarts)} restarts in the last minute)"
                    self.stderr.write(
                        f"{name} exited with {child.returncode}{why}; stopping the rest"
                    )
                    stopping, exit_code = True, child.returncode or 1
                    continue
                restarts.append(now)
                children[i] = start(child.args)
                self.stderr.write(
                    f"{name} exited with {child.returncode}; restarted it (pid {children[i].pid})"
                )
            time.sleep(0.3)
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        sys.exit(exit_code)
