"""Every form a person can post, fuzzed as a superuser over the seeded demo: any field, any text,
any file, never a 5xx (the test client re-raises a view's exception, so a 500 fails here with
its traceback). STEPWISE_FUZZ_EXAMPLES per form (25 in CI; `make fuzz` runs 2,000)."""

import os
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import ApiToken
from incidents.models import Incident
from rollouts.models import Assumption, Decision, Deviation

pytestmark = pytest.mark.django_db

FUZZ_EXAMPLES = int(os.environ.get("STEPWISE_FUZZ_EXAMPLES", "25"))
FORM_POSTS = [
    "/ledger/record",
    "/plans/import/",
    "/plans/{plan}/action",
    "/plans/{plan}/assumptions/add",
    "/plans/{plan}/assumptions/{assumption}/edit",
    "/plans/{plan}/assumptions/status",
    "/plans/{plan}/assumption-policy",
    "/plans/{plan}/decisions/",
    "/plans/{plan}/steps/{step}/action",
    "/plans/{plan}/steps/{step}/override-budget",
    "/plans/{plan}/steps/{step}/confirm",
    "/plans/{plan}/deviations/{deviation}/reconcile",
    "/flags/{flag}/revert",
    "/flags/{flag}/restore",
    "/flags/{flag}/change",
    "/incidents/declare",
    "/incidents/{incident}/narrate",
    "/incidents/{incident}/status",
    "/incidents/{incident}/triage",
    "/incidents/{incident}/hypothesis",
    "/incidents/{incident}/hypothesis/close",
    "/incidents/{incident}/change",
    "/incidents/{incident}/flag-settings",
    "/incidents/{incident}/change/verify",
    "/incidents/{incident}/flag-revert",
    "/incidents/{incident}/break-glass",
    "/incidents/{incident}/handover",
    "/incidents/{incident}/roles",
    "/incidents/{incident}/decisions",
    "/incidents/{incident}/action-items",
    "/incidents/{incident}/postmortem/write",
    "/slos/import",
    "/metric-sources/",
    "/password/",
    "/integrations/tokens",
    "/integrations/tokens/{token}/revoke",
]
# Every field name any form here reads, and a few it does not.
FIELDS = [
    "action",
    "actor",
    "assumption",
    "believed",
    "better",
    "change",
    "confirmed",
    "corrects",
    "decided",
    "decision",
    "description",
    "enabled",
    "evaluation",
    "evidence",
    "expected_effect",
    "expires_in_days",
    "flag",
    "flag_enabled",
    "flag_key",
    "flag_percentage",
    "flags",
    "hypothesis",
    "impact",
    "incident",
    "kind",
    "label",
    "name",
    "note",
    "observed",
    "on",
    "owner",
    "plan",
    "plans",
    "policy",
    "probe",
    "probe_cost",
    "probe_step",
    "reason",
    "revert_plan",
    "role",
    "rollout_percentage",
    "root_cause",
    "seen_version",
    "service",
    "services",
    "severity",
    "statement",
    "status",
    "step",
    "subject",
    "subject_type",
    "summary",
    "switch",
    "target",
    "text",
    "title",
    "uncertainty",
    "username",
    "version",
    "why",
    "would_choose_again",
    "previewed",
    "base",
    "next",
    "old_password",
    "new_password1",
    "new_password2",
    "url",
    "timeout_seconds",
    "verify_tls",
    "auth_scheme",
    "auth_secret_ref",
    "unknown_field",
]
_value = (
    st.text(max_size=60)
    | st.integers(-5, 200).map(str)
    | st.sampled_from(
        ["", "0", "1", "-1", "100", "100.5", "on", "true", "start", "pause", "revert", "retry",
         "skip", "advance", "fail", "complete", "accept", "persist", "adapt", "kill", "other",
         "holding", "broken", "SEV1", "login-5", "new-login", "eu-west", "commander", "viewer",
         "exporter", "flag-client", "node-eu",
         "9" * 40, "1e400", "NaN", "\x00", "a" * 5000]
    )
)  # fmt: skip
_body = st.dictionaries(st.sampled_from(FIELDS), _value | st.lists(_value, max_size=3), max_size=8)
_file = st.binary(max_size=400) | st.text(max_size=400).map(str.encode)


@pytest.fixture
def admin(client):
    call_command("seed_demo", verbosity=0)
    assert client.login(username="admin", password="stepwise-demo")
    return client


def _ids() -> dict[str, object]:
    return {
        "plan": "identity-migration",
        "step": "login-5",
        "flag": "new-login",
        "incident": Incident.objects.order_by("pk").values_list("pk", flat=True).first() or 1,
        "assumption": Assumption.objects.order_by("pk").values_list("pk", flat=True).first() or 1,
        "deviation": Deviation.objects.order_by("pk").values_list("pk", flat=True).first() or 1,
        "decision": Decision.objects.order_by("pk").values_list("pk", flat=True).first() or 1,
        "token": ApiToken.objects.order_by("pk").values_list("pk", flat=True).first() or 1,
    }


def test_fuzz__any_form_post__never_a_5xx(admin, suite_report):
    """One seeded demo (seeding takes seconds), every form in turn."""
    statuses: Counter[int] = Counter()
    for template in FORM_POSTS:
        _fuzz(admin, template.format(**_ids()), statuses)
    suite_report(
        f"form fuzz: {len(FORM_POSTS)} forms, {sum(statuses.values())} posts, "
        f"statuses {dict(sorted(statuses.items()))}"
    )


def _fuzz(admin, path: str, statuses: Counter) -> None:
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(body=_body, upload=st.none() | _file, htmx=st.booleans())
    def run(body, upload, htmx):
        data = dict(body)
        if upload is not None:
            data["file"] = data["upload"] = SimpleUploadedFile("fuzz.yaml", upload)
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        response = admin.post(path, data, **headers)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (path, body, response.status_code)
        if not admin.session.get("_auth_user_id"):  # a fuzzed password change signs out
            assert admin.login(username="admin", password="stepwise-demo")

    run()


@pytest.mark.parametrize("next_", ["0", "plan-detail", "//evil.example/x", "https://evil.example/"])
def test_form_next__a_name_or_another_site__back_to_the_start_page_never_a_500(
    client, role_user, next_
):
    """Found by the fuzz above: `next=0` made redirect() look up a view named "0" (a 500)."""
    client.force_login(role_user("tpm"))
    response = client.post("/flags/new-login/revert", {"next": next_, "reason": "x"})
    assert response.status_code == 302 and response["Location"] == "/"
