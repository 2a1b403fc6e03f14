"""The verification engine in the real served app: a Celery worker acts on a breaching sample
posted to the ingest API, without waiting for the step's interval."""

import json
import time
import urllib.request

from tests.rollouts.test_ofrep_client import _shell
from tests.serving import served

SETUP = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from accounts.services import api_token_create
from rollouts.models import Step
from rollouts.services.steps import step_target_confirm, step_transition

User = get_user_model()
exporter, _ = User.objects.get_or_create(username="exporter")
exporter.user_permissions.add(
    Permission.objects.get(codename="add_sample"),
    Permission.objects.get(codename="view_ledgerentry"),
)
_, raw = api_token_create(user=exporter, name="exporter", scopes=["metrics:write", "ledger:read"])
from rollouts.services.evaluation import verification_evaluate

gateway = Step.objects.get(plan__key="identity-migration", key="gateway-policy")
step_target_confirm(step_id=gateway.pk, target="ap-south", actor=None, source="test")
# The seeded backfill verifies on the seeded metrics (the worker may be evaluating it too).
backfill = Step.objects.get(plan__key="identity-migration", key="sessions-backfill")
for _ in range(backfill.verify_count):
    verification_evaluate(verification_id=backfill.verifications.get().pk)
for region in ("us-east", "eu-west", "ap-south"):
    step_target_confirm(step_id=backfill.pk, target=region, actor=None, source="test")
login = Step.objects.get(plan__key="identity-migration", key="login-5")
# Only a breaching sample can make this verification evaluate within the test.
Step.objects.filter(pk=login.pk).update(
    verify_interval_seconds=3600, verify_initial_delay_seconds=3600
)
step_transition(step_id=login.pk, action="start", actor=User.objects.get(username="tpm"))
print(json.dumps({"token": raw}))
"""

STATE = """
import json
from ledger.models import LedgerEntry
from rollouts.models import Evaluation, Flag, Step
step = Step.objects.get(plan__key="identity-migration", key="login-5")
flag = Flag.objects.select_related("current").get(key="new-login")
evaluations = list(Evaluation.objects.filter(verification__step=step).values_list("trigger", "outcome"))
print(json.dumps({
    "status": step.status,
    "evaluations": evaluations,
    "rollout": float(flag.current.rollout_percentage),
    "failed_entries": LedgerEntry.objects.filter(step_id=step.pk, action="verification.failed").count(),
}))
"""


def _ingest(
    base: str,
    token: str,
    value: float,
    *,
    name: str = "login_error_ratio",
    labels: dict[str, str] | None = None,
) -> dict:
    """One sample posted to the ingest API now (`login_error_ratio{variant="on"}` unless told)."""
    body = json.dumps(
        {
            "samples": [
                {
                    "name": name,
                    "labels": {"variant": "on"} if labels is None else labels,
                    "timestamp": time.time(),
                    "value": value,
                }
            ]
        }
    ).encode()
    request = urllib.request.Request(
        base + "/api/metrics/ingest",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _ledger_count(base: str, token: str, action: str) -> int:
    request = urllib.request.Request(
        f"{base}/api/ledger?step=identity-migration/login-5&action={action}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["count"]


def test_breaching_sample__served_app_with_worker__flag_set_to_zero_and_step_failed(tmp_path):
    with served(tmp_path) as server:
        token = json.loads(_shell(server, SETUP).strip().splitlines()[-1])["token"]
        before = json.loads(_shell(server, STATE).strip().splitlines()[-1])
        assert before["status"] == "running"
        assert before["rollout"] == 5.0
        assert before["evaluations"] == []

        assert _ingest(server.base, token, 0.05) == {"written": 1}
        # Watched over the ledger API: a `manage.py shell` per poll costs seconds on a busy machine.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _ledger_count(server.base, token, "step.failed"):
            time.sleep(0.25)
        state = json.loads(_shell(server, STATE).strip().splitlines()[-1])

        assert state["status"] == "failed", server.log.read_text()[-3000:]
        assert state["evaluations"] == [["ingest", "fail"]]
        assert state["rollout"] == 0.0  # on_fail: set_flag_percentage 0
        assert state["failed_entries"] == 1
