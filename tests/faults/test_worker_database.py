"""A worker keeps its database connection between tasks; a database restart must not leave it
failing every task on the dead connection (issue 13: the worker was off for 26 minutes)."""

import psycopg
import pytest
from celery.signals import task_prerun
from django.db import OperationalError, connection

from rollouts.tasks import DATABASE_RETRY, convergence_check_task, verification_evaluate_task

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _kill_this_connection() -> None:
    """What a PostgreSQL restart does to a worker's idle connection: the server ends it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        dbname=params.get("dbname"),
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_worker_connection__killed_between_tasks__next_task_gets_a_fresh_one():
    connection.ensure_connection()
    _kill_this_connection()

    task_prerun.send(sender=verification_evaluate_task, task_id="t", task=None)

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_worker_connection__without_the_check__the_dead_connection_fails():
    """The check above is what makes the difference: the same kill, no check, a failed query."""
    connection.ensure_connection()
    _kill_this_connection()

    with pytest.raises(OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()


def test_evaluation_tasks__database_errors__retried_with_backoff_not_dropped():
    for task in (verification_evaluate_task, convergence_check_task):
        assert set(task.autoretry_for) >= {OperationalError}
        assert task.max_retries == DATABASE_RETRY["max_retries"]
