import json
import re

import pytest

from accounts.services import api_token_create
from ledger.models import LedgerEntry
from rollouts.models import Deviation, Flag

pytestmark = pytest.mark.django_db


@pytest.fixture
def program(make_plan):
    return make_plan(
        [
            {"key": "roles", "team": "identity", "targets": ["us-east", "eu-west"]},
            {
                "key": "app-deploy",
                "team": "accounts",
                "kind": "deploy",
                "service": "accounts-api",
                "deps": ["roles"],
                "targets": ["eu-west"],
            },
            {
                "key": "ramp-5",
                "team": "web",
                "flag": "new-login",
                "percentage": 5,
                "deps": ["app-deploy"],
            },
        ],
        key="identity",
    )


@pytest.mark.parametrize("role", ["viewer", "tpm"])
def test_pages__each_role__portfolio_plan_step_and_flags_render(client, role_user, program, role):
    client.force_login(role_user(role))
    assert b"identity" in client.get("/").content
    page = client.get("/plans/identity/").content.decode()
    assert 'id="dependency-graph"' in page and "waits for roles" in page
    assert "Declared vs actual order" in page
    step = client.get("/plans/identity/steps/app-deploy/").content.decode()
    assert "Convergence per target" in step and "eu-west" in step
    board = client.get("/flags/").content.decode()
    assert "new-login" in board and "identity/ramp-5" in board
    assert b"History" in client.get("/flags/new-login/").content


def test_portfolio__filter_by_team_and_status(client, role_user, program):
    client.force_login(role_user("viewer"))
    assert client.get("/?team=web").context["rows"][0]["plan"].key == "identity"
    assert client.get("/?team=nobody").context["rows"] == []
    assert client.get("/?status=killed").context["rows"] == []


def test_step_action__out_of_order__409_with_the_reason_and_nothing_changes(
    client, role_user, program
):
    client.force_login(role_user("tpm"))
    response = client.post(
        "/plans/identity/steps/app-deploy/action", {"action": "start"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 409
    assert b"waits for roles" in response.content
    assert program.steps.get(key="app-deploy").status == "pending"


def test_step_action__viewer__403(client, role_user, program):
    client.force_login(role_user("viewer"))
    assert client.post("/plans/identity/steps/roles/action", {"action": "start"}).status_code == 403
    assert program.steps.get(key="roles").status in {"pending", "ready"}


def test_step_action__start__running_and_pushed_to_plan_stream(client, role_user, program, pushes):
    client.force_login(role_user("tpm"))
    with pushes.commit():
        response = client.post(
            "/plans/identity/steps/roles/action", {"action": "start"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert program.steps.get(key="roles").status == "running"
    pushed = pushes.last_html(f"plan:{program.pk}")
    assert 'data-testid="status-roles">running' in pushed and 'hx-swap-oob="true"' in pushed


def test_step_action__skip_needs_a_reason_from_the_prompt(client, role_user, program):
    client.force_login(role_user("tpm"))
    assert (
        client.post(
            "/plans/identity/steps/roles/action", {"action": "skip"}, HTTP_HX_REQUEST="true"
        ).status_code
        == 400
    )
    ok = client.post(
        "/plans/identity/steps/roles/action",
        {"action": "skip"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_PROMPT="done by hand",
    )
    assert ok.status_code == 200 and program.steps.get(key="roles").status == "skipped"


def test_flag_revert__board__new_version_and_stale_click_refused(client, role_user, program):
    from rollouts.services.flags import flag_change

    flag_change(
        flag_key="new-login", changes={"enabled": True}, actor=None, reason="try", source="api"
    )
    client.force_login(role_user("commander"))
    assert (
        client.post(
            "/flags/new-login/revert", {"seen_version": 2}, HTTP_HX_REQUEST="true"
        ).status_code
        == 200
    )
    assert Flag.objects.get(key="new-login").current.number == 3
    stale = client.post("/flags/new-login/revert", {"seen_version": 2}, HTTP_HX_REQUEST="true")
    assert stale.status_code == 409 and b"already at v3" in stale.content


def test_flag_revert__responder__403(client, role_user, program):
    client.force_login(role_user("responder"))
    assert client.post("/flags/new-login/revert", {"seen_version": 1}).status_code == 403


def test_flag_change__bad_percentage__400_form_error_and_no_version(client, role_user, program):
    client.force_login(role_user("tpm"))
    response = client.post(
        "/flags/new-login/change",
        {"enabled": "on", "rollout_percentage": "140", "reason": "x"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400 and b"rollout_percentage" in response.content
    assert Flag.objects.get(key="new-login").versions.count() == 1


def _deploy(client, token: str | None, body) -> object:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(
        "/api/deploys",
        data=json.dumps(body) if not isinstance(body, str) else body,
        content_type="application/json",
        **headers,
    )


def test_deploy_webhook__service_not_reached_yet__deviation_recorded(client, role_user, program):
    _, raw = api_token_create(user=role_user("tpm"), name="ci", scopes=["deploys:write"])
    response = _deploy(
        client, raw, {"service": "accounts-api", "version": "2.4.0", "target": "eu-west"}
    )
    assert response.status_code == 202 and len(response.json()["deviations"]) == 1
    deviation = Deviation.objects.get()
    assert (
        deviation.kind == "deploy"
        and deviation.step.key == "app-deploy"
        and "before step app-deploy" in deviation.summary
    )
    assert LedgerEntry.objects.filter(action="deploy.reported").count() == 1


def test_deploy_webhook__running_deploy_step__confirms_that_target(client, role_user, program):
    from rollouts.services.steps import step_target_confirm, step_transition

    tpm = role_user("tpm")
    roles = program.steps.get(key="roles")
    step_transition(step_id=roles.pk, action="start", actor=tpm)
    for action in ("advance", "advance"):
        step_transition(step_id=roles.pk, action=action, actor=tpm)
    for target in ("us-east", "eu-west"):
        step_target_confirm(
            step_id=roles.pk, target=target, actor=tpm, source="person", reason="checked by hand"
        )
    step_transition(step_id=program.steps.get(key="app-deploy").pk, action="start", actor=tpm)
    _, raw = api_token_create(user=tpm, name="ci", scopes=["deploys:write"])
    response = _deploy(
        client, raw, {"service": "accounts-api", "version": "2.4.0", "target": "eu-west"}
    )
    assert response.json()["confirmed"] == ["identity/app-deploy"]
    assert program.steps.get(key="app-deploy").step_targets.get().state == "converged"
    assert not Deviation.objects.exists()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ([1, 2], 400),
        ({"service": "x"}, 400),
        ({"service": "x", "version": "1", "target": "bad target!"}, 400),
    ],
)
def test_deploy_webhook__malformed__400_and_nothing_recorded(
    client, role_user, program, body, status
):
    _, raw = api_token_create(user=role_user("tpm"), name="ci", scopes=["deploys:write"])
    assert _deploy(client, raw, body).status_code == status
    assert not LedgerEntry.objects.filter(action="deploy.reported").exists()


def test_deploy_webhook__no_or_wrong_token__401_or_403(client, role_user, program):
    assert (
        _deploy(client, None, {"service": "a", "version": "1", "target": "eu-west"}).status_code
        == 401
    )
    assert (
        _deploy(
            client, "sw_forged", {"service": "a", "version": "1", "target": "eu-west"}
        ).status_code
        == 401
    )
    _, raw = api_token_create(user=role_user("tpm"), name="reader", scopes=["ledger:read"])
    assert (
        _deploy(client, raw, {"service": "a", "version": "1", "target": "eu-west"}).status_code
        == 403
    )


def test_api_step_action__out_of_order__409_json_reason(client, role_user, program):
    _, raw = api_token_create(user=role_user("tpm"), name="bot", scopes=["plans:write"])
    step = program.steps.get(key="ramp-5")
    response = client.post(
        f"/api/steps/{step.pk}/action",
        data=json.dumps({"action": "start"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 409 and "waits for app-deploy" in response.json()["error"]
    missing = client.post(
        "/api/steps/999999/action",
        data=json.dumps({"action": "start"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert missing.status_code == 404


def test_flag_detail__history__diffs_shown_as_json(client, role_user, program):
    from rollouts.services.flags import flag_change

    flag_change(
        flag_key="new-login",
        changes={"enabled": True, "rollout_percentage": 0},
        actor=None,
        reason="armed at 0%",
        source="api",
    )
    client.force_login(role_user("viewer"))
    html = client.get("/flags/new-login/").content.decode()
    assert '<span class="before">false</span> → <span class="after">true</span>' in html
    assert '<span class="after">{&quot;on&quot;: true, &quot;off&quot;: false}</span>' in html


def _flag_turned_on() -> None:
    from rollouts.services.flags import flag_change

    flag_change(
        flag_key="new-login", changes={"enabled": True}, actor=None, reason="try", source="api"
    )


def test_flag_detail__restore_form__asks_why_with_a_required_field(client, role_user, program):
    _flag_turned_on()
    client.force_login(role_user("commander"))
    html = client.get("/flags/new-login/").content.decode()
    form = re.search(r'<form id="restore-v1".*?</form>', html, re.S).group(0)
    assert re.search(r"<label>Why <input [^>]*name=\"reason\"[^>]*\brequired\b", form)
    assert 'id="restore-v2"' not in html  # v2 is current: nothing to restore


@pytest.mark.parametrize("reason", [None, "   "], ids=["missing", "blank"])
def test_flag_restore__no_reason__400_error_beside_the_field_and_no_version(
    client, role_user, program, reason
):
    _flag_turned_on()
    client.force_login(role_user("commander"))
    data = {"version": 1} | ({"reason": reason} if reason is not None else {})

    response = client.post("/flags/new-login/restore", data)

    assert response.status_code == 400
    form = re.search(r'<form id="restore-v1".*?</form>', response.content.decode(), re.S)
    # The error sits right after the field, which points at it for screen readers.
    assert re.search(
        r'name="reason"[^>]*aria-describedby="restore-v1-reason_error"[^>]*>'
        r'<span id="restore-v1-reason_error" class="error" role="alert"[^>]*>'
        r"This field is required.</span>",
        form.group(0),
    )
    assert Flag.objects.get(key="new-login").versions.count() == 2
    assert not LedgerEntry.objects.filter(action="flag.restored").exists()


def test_flag_restore__no_reason_from_htmx__the_form_swapped_back_with_its_error(
    client, role_user, program
):
    _flag_turned_on()
    client.force_login(role_user("commander"))

    response = client.post("/flags/new-login/restore", {"version": 1}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#restore-v1", "outerHTML")
    html = response.content.decode().strip()
    assert html.startswith('<form id="restore-v1"') and html.endswith("</form>")
    assert 'data-testid="restore-error-1">This field is required.</span>' in html
    assert Flag.objects.get(key="new-login").versions.count() == 2


def test_flag_restore__with_reason__new_version_carries_it(client, role_user, program):
    _flag_turned_on()
    client.force_login(role_user("commander"))

    response = client.post(
        "/flags/new-login/restore",
        {"version": 1, "reason": "v2 doubled login errors"},
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200 and b"new-login: restored" in response.content
    current = Flag.objects.select_related("current__restored_from").get(key="new-login").current
    assert (current.number, current.restored_from.number, current.reason) == (
        3,
        1,
        "v2 doubled login errors",
    )


def test_deviation_reconcile__accept_with_reason__closed_and_recorded_viewer_refused(
    client, role_user, program
):
    from rollouts.services.flags import flag_change

    flag_change(
        flag_key="new-login", changes={"enabled": True}, actor=None, reason="by hand", source="api"
    )
    deviation = Deviation.objects.get()
    url = f"/plans/identity/deviations/{deviation.pk}/reconcile"
    client.force_login(role_user("viewer"))
    assert client.post(url, {"decision": "accept", "reason": "fine"}).status_code == 403
    client.force_login(role_user("tpm"))
    missing = client.post(url, {"decision": "accept", "reason": ""}, HTTP_HX_REQUEST="true")
    assert missing.status_code == 400 and Deviation.objects.get().status == "open"
    ok = client.post(
        url,
        {"decision": "accept", "reason": "smoke test agreed with the team"},
        HTTP_HX_REQUEST="true",
    )
    assert ok.status_code == 200
    deviation.refresh_from_db()
    assert (
        deviation.status == "accepted"
        and deviation.resolution_reason == "smoke test agreed with the team"
    )
    assert LedgerEntry.objects.filter(action="deviation.accepted", plan_id=program.pk).exists()
    again = client.post(url, {"decision": "revert", "reason": "x"}, HTTP_HX_REQUEST="true")
    assert again.status_code == 409 and b"already accepted by" in again.content


def test_flags_board__revert_would_raise_exposure__button_disabled_with_the_reason(
    client, role_user
):
    from rollouts.services.flags import flag_change, flag_create, flag_revert

    tpm = role_user("tpm")
    flag_create(key="checkout", description="", kind="release", owner="web", actor=tpm)
    for pct in (25, 100):
        flag_change(
            flag_key="checkout",
            changes={"enabled": True, "rollout_percentage": pct},
            actor=tpm,
            reason=f"to {pct}",
            source="board",
        )
    client.force_login(tpm)
    html = client.get("/flags/").content.decode()
    assert "Revert checkout: on at 100% (v3) → on at 25% (v2)?" in html
    assert "Revert to on at 25%</button>" in html

    flag_revert(flag_key="checkout", seen_version=3, actor=tpm, reason="", source="board")
    html = client.get("/flags/").content.decode()
    assert 'data-testid="revert-refused-checkout"' in html
    assert 'disabled title="reverting checkout v4 would apply v3&#x27;s settings' in html
    refused = client.post(
        "/flags/checkout/revert", {"seen_version": 4, "reason": ""}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 409
    assert "a revert never raises exposure" in refused.content.decode()


def test_flag_page__changed_then_caught_up__pushed_live_with_version_setting_and_holding(
    client, role_user, pushes
):
    from rollouts.services.consumers import flag_consumer_fetch_record
    from rollouts.services.flags import flag_change
    from tests.rollouts.flag_factories import consumer_make, flag_make

    flag = flag_make("new-login", enabled=True, rollout_percentage=5)
    consumer, _ = consumer_make(name="eu-a", target="eu")
    client.force_login(role_user("viewer"))
    page = client.get("/flags/new-login/").content.decode()
    assert f'data-live-stream="{flag.stream}"' in page
    assert "consumers holding it: 0 of 1" in page

    with pushes.commit():
        version = flag_change(
            flag_key="new-login",
            changes={"rollout_percentage": 25},
            actor=role_user("tpm"),
            reason="ramp",
            source="board",
        )
    html = pushes.last_html(flag.stream)
    assert f"Serving <strong>v{version.number}</strong>" in html and "25%" in html
    assert f'data-testid="version-{version.number}"' in html
    assert "consumers holding it: 0 of 1" in html

    with pushes.commit():
        flag_consumer_fetch_record(consumer_id=consumer.pk, revision=version.config_revision)
    assert "consumers holding it: 1 of 1" in pushes.last_html(flag.stream)
    assert "1/1 consumers" in pushes.last_html("flags")
