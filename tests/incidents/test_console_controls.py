"""The console's controls say what they will do and why they cannot, before the click: the revert
dialog names the settings, a refused revert or change is greyed out with the reason, "Make one
change" can change a flag, and every answer lands beside the control that was used."""

import re

import pytest
from django.urls import reverse

from incidents.models import Change, Incident
from incidents.services import (
    change_start,
    change_verify,
    hypothesis_state,
    incident_declare,
    incident_flag_revert,
)
from incidents.streams import console_state
from rollouts.models import Flag

pytestmark = pytest.mark.django_db


@pytest.fixture
def linked(commander, changed_flag) -> Incident:
    """An incident linked to checkout-v2 (v1 off, v2 on at 50%)."""
    return incident_declare(
        title="Checkout 500s", severity=2, actor=commander, flag_keys=[changed_flag.key]
    )


def _hypothesis(incident: Incident, actor) -> None:
    hypothesis_state(incident_id=incident.pk, statement="checkout-v2 breaks carts", actor=actor)


def _console(client, incident: Incident) -> str:
    return client.get(reverse("incident-console", args=[incident.pk])).content.decode()


def _latest_push(incident: Incident) -> str:
    """What a push of the console draws now."""
    return console_state(str(incident.pk))


def _flag_line(html: str, key: str) -> str:
    """The flag's line in the Flags card: its state, its Revert form and what sits beside it."""
    start = html.index(f'data-testid="console-flag-{key}"')
    end = html.find('<div class="flag-line"', start)
    return html[start : end if end != -1 else html.index("</section>", start)]


def _button(html: str, testid: str) -> str:
    return re.search(rf'<button[^>]*data-testid="{testid}"[^>]*>[^<]*</button>', html).group(0)


def _post(client, name: str, incident: Incident, data: dict):
    return client.post(reverse(name, args=[incident.pk]), data, HTTP_HX_REQUEST="true")


# --- the one-click revert ------------------------------------------------------------------------


def test_console_revert__dialog__names_the_settings_that_will_apply(client, commander, linked):
    _hypothesis(linked, commander)
    client.force_login(commander)

    line = _flag_line(_console(client, linked), "checkout-v2")

    assert 'hx-confirm="Revert checkout-v2: on at 50% (v2) → off (v1)?"' in line
    assert "v2 · on at 50%" in line
    button = _button(line, "console-revert-checkout-v2")
    assert "disabled" not in button and button.endswith(">Revert to off</button>")


def test_console_revert__revert_of_a_revert__greyed_out_with_why_and_refused_beside_it(
    client, commander, linked, changed_flag
):
    _hypothesis(linked, commander)
    first = incident_flag_revert(
        incident_id=linked.pk, flag_key="checkout-v2", seen_version=2, actor=commander
    )
    change_verify(incident_id=linked.pk, change_id=first.pk, better=True, actor=commander)
    client.force_login(commander)

    line = _flag_line(_console(client, linked), "checkout-v2")

    button = _button(line, "console-revert-checkout-v2")
    why = "reverting checkout-v2 v3 would apply v2&#x27;s settings (on at 50%, now off)"
    assert f'disabled title="{why}' in button
    assert button.endswith(">Revert to on at 50%</button>")
    assert re.search(rf'data-testid="console-revert-why-checkout-v2">{re.escape(why)}', line)
    # A click anyway (a stale page): the refusal lands in the box beside the button.
    assert 'hx-target="#revert-result-checkout-v2"' in line
    assert 'id="revert-result-checkout-v2"' in line
    refused = _post(
        client, "incident-flag-revert", linked, {"flag": "checkout-v2", "seen_version": 3}
    )
    assert refused.status_code == 409
    assert "a revert never raises exposure" in refused.content.decode()
    assert Flag.objects.get(key="checkout-v2").current.number == 3


@pytest.mark.parametrize("state", ["no-hypothesis", "change-in-progress"])
def test_console_revert__not_a_change_now__greyed_out_with_the_services_reason(
    client, commander, linked, state
):
    if state == "change-in-progress":
        _hypothesis(linked, commander)
        change_start(
            incident_id=linked.pk,
            description="Drain eu-west",
            expected_effect="5xx below 1%",
            revert_plan="undrain eu-west",
            actor=commander,
        )
        why = "change “Drain eu-west” is in progress: verify it (hold or revert) before starting"
    else:
        why = "state a hypothesis first: a revert tests one too"
    client.force_login(commander)

    line = _flag_line(_console(client, linked), "checkout-v2")

    assert f'disabled title="{why}' in _button(line, "console-revert-checkout-v2")
    assert why in line.split('data-testid="console-revert-why-checkout-v2">')[1]
    refused = _post(
        client, "incident-flag-revert", linked, {"flag": "checkout-v2", "seen_version": 2}
    )
    assert refused.status_code == 409 and why in refused.content.decode()


def test_console_revert__posted__a_change_to_verify_with_the_expected_effect_given(
    client, commander, linked
):
    _hypothesis(linked, commander)
    client.force_login(commander)

    response = _post(
        client,
        "incident-flag-revert",
        linked,
        {"flag": "checkout-v2", "seen_version": 2, "expected_effect": "carts work again"},
    )

    assert response.status_code == 200
    assert "checkout-v2 reverted: verify it under “Now”" in response.content.decode()
    change = Change.objects.get()
    assert (change.description, change.expected_effect, change.status) == (
        "Revert checkout-v2 v2 (on at 50%) → off",
        "carts work again",
        "in_progress",
    )
    # Pushed: it is the change under "Now", with its verdict buttons; Start is greyed out.
    pushed = _latest_push(linked)
    assert "Revert checkout-v2 v2 (on at 50%) → off" in pushed
    assert 'data-testid="change-better"' in pushed
    assert "restore checkout-v2 v2 (on at 50%)" in pushed


# --- "Make one change" ---------------------------------------------------------------------------


def test_console_change_form__revert_is_a_required_field(client, commander, linked):
    client.force_login(commander)

    html = _console(client, linked)

    [field] = re.findall(r'<input name="revert_plan"[^>]*>', html)
    assert " required " in field


def test_console_change_start__no_hypothesis_then_change_in_progress__greyed_out_live(
    client, commander, linked
):
    client.force_login(commander)
    start = _button(_console(client, linked), "change-start")
    assert 'disabled title="state a hypothesis first: a change tests one"' in start

    _hypothesis(linked, commander)
    pushed = _latest_push(linked)
    assert '<div id="change-start" class="button-row" hx-swap-oob="true">' in pushed
    assert "disabled" not in _button(pushed, "change-start")

    change = change_start(
        incident_id=linked.pk,
        description="Drain eu-west",
        expected_effect="5xx below 1%",
        revert_plan="undrain eu-west",
        actor=commander,
    )
    why = (
        "change “Drain eu-west” is in progress: verify it (hold or revert) before starting another"
    )
    pushed = _latest_push(linked)
    assert f'disabled title="{why}"' in _button(pushed, "change-start")
    assert f'data-testid="change-start-why">{why}</p>' in pushed

    change_verify(incident_id=linked.pk, change_id=change.pk, better=True, actor=commander)
    assert "disabled" not in _button(_latest_push(linked), "change-start")


def test_console_change_form__a_flag_change__flag_changed_with_the_revert_written_out(
    client, commander, linked, changed_flag
):
    _hypothesis(linked, commander)
    client.force_login(commander)
    html = _console(client, linked)
    assert '<option value="checkout-v2">on at 50% (v2)</option>' in html

    response = _post(
        client,
        "incident-change",
        linked,
        {
            "description": "Checkout v2 down to 10%",
            "expected_effect": "5xx below 1%",
            "revert_plan": "",
            "flag_key": "checkout-v2",
            "flag_enabled": "",
            "flag_percentage": "10",
        },
    )

    assert response.status_code == 200, response.content
    change = Change.objects.get()
    assert change.flag == changed_flag
    assert change.flag_version.settings_text() == "on at 10%"
    assert change.revert_plan == "restore checkout-v2 v2 (on at 50%)"
    assert linked.timeline.order_by("-seq").first().text == (
        "Change: Checkout v2 down to 10% — checkout-v2: on at 50% (v2) → on at 10% (v3) — "
        "expect: 5xx below 1% — revert: restore checkout-v2 v2 (on at 50%)"
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"flag_key": "checkout-v2"}, "say what checkout-v2 becomes: turn it on or off"),
        ({"flag_enabled": "off"}, "pick the flag these settings are for"),
        ({"flag_key": "nope", "flag_enabled": "off"}, "no flag &#x27;nope&#x27;"),
        ({"revert_plan": "n/a"}, "“n/a” is not a revert"),
        ({"revert_plan": ""}, "every change names its revert before it starts"),
    ],
    ids=["flag-without-settings", "settings-without-flag", "unknown-flag", "n/a", "no-revert"],
)
def test_console_change_form__incomplete__refused_beside_the_form(
    client, commander, linked, changed_flag, fields, words
):
    _hypothesis(linked, commander)
    client.force_login(commander)
    html = _console(client, linked)
    assert 'hx-target="#change-result"' in html and 'id="change-result"' in html

    response = _post(
        client,
        "incident-change",
        linked,
        {"description": "Checkout v2", "expected_effect": "5xx below 1%", **fields},
    )

    assert response.status_code == 400
    assert words in response.content.decode()
    assert Change.objects.count() == 0 and changed_flag.versions.count() == 2


def test_flag_settings__chosen_flag__current_settings_and_the_revert_it_fills_in(
    client, commander, linked
):
    client.force_login(commander)
    url = reverse("incident-flag-settings", args=[linked.pk])

    known = client.get(url, {"flag_key": "checkout-v2"}).content.decode()
    unknown = client.get(url, {"flag_key": "nope"}).content.decode()

    assert 'data-revert="restore checkout-v2 v2 (on at 50%)"' in known
    assert "checkout-v2 is now <strong>on at 50%</strong> (v2)" in known
    assert "no flag “nope”" in unknown
    assert client.get(url, {"flag_key": ""}).content.decode().strip() == ""


# --- answers beside the controls -----------------------------------------------------------------


def test_console__every_form__answers_into_a_box_beside_it(client, commander, linked, make_switch):
    make_switch()
    _hypothesis(linked, commander)
    change_start(
        incident_id=linked.pk,
        description="Drain eu-west",
        expected_effect="5xx below 1%",
        revert_plan="undrain eu-west",
        actor=commander,
    )
    client.force_login(commander)
    html = _console(client, linked)

    forms = re.findall(r"<form\b[^>]*>", html)
    targets = [re.search(r'hx-target="#([^"]+)"', f).group(1) for f in forms if "hx-post" in f]
    assert len(targets) == len([f for f in forms if "hx-post" in f]) >= 12
    assert "action-result" not in html
    for target in set(targets):
        assert html.count(f' id="{target}"') == 1, target
    # Inside pushed parts the boxes are kept across pushes, so an answer is not wiped by them.
    for pushed_box in ("revert-result-checkout-v2", "verify-result", "status-result"):
        assert re.search(rf'id="{pushed_box}"[^>]*hx-preserve="true"', html), pushed_box
