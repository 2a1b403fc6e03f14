"""The console's forms post with CSRF enforced both ways they reach a browser: served with the page
(the hidden field carries the token, so a plain form post works) and pushed over the websocket
(rendered without a request: the field is empty and htmx sends the page's token in the
X-CSRFToken header set once on <body hx-headers>)."""

import re
import warnings

import pytest
from django.test import Client
from django.urls import reverse

from incidents.models import Change, Incident
from incidents.services import change_start, hypothesis_state, incident_declare
from incidents.streams import console_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_incident(commander, changed_flag, make_switch) -> Incident:
    """Every console form showing: status moves, hypothesis, change, flag revert, break-glass."""
    make_switch()
    incident = incident_declare(
        title="Checkout 500s", severity=2, actor=commander, flag_keys=[changed_flag.key]
    )
    hypothesis_state(incident_id=incident.pk, statement="eu-west pool exhausted", actor=commander)
    return incident


def _drain(incident: Incident, actor) -> Change:
    return change_start(
        incident_id=incident.pk,
        description="Drain eu-west",
        expected_effect="5xx below 1% within 5 min",
        revert_plan="undrain eu-west",
        actor=actor,
    )


def _forms(html: str) -> list[str]:
    return re.findall(r"<form\b.*?</form>", html, re.S)


def _form_with(html: str, testid: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the form holding the button `data-testid=testid`."""
    [form] = [f for f in _forms(html) if f'data-testid="{testid}"' in f]
    action = re.search(r'\baction="([^"]+)"', form).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    return action, fields


def _latest_push(incident: Incident) -> str:
    """What a push of the console draws now."""
    return console_state(str(incident.pk))


def test_console_push__every_form__no_csrf_warning_and_no_token_in_the_html(
    busy_incident, commander, settings
):
    settings.DEBUG = True  # Django warns about a tokenless {% csrf_token %} only then
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _drain(busy_incident, commander)  # pushes the whole console

    assert [str(w.message) for w in caught if "csrf_token" in str(w.message)] == []
    forms = _forms(_latest_push(busy_incident))
    # 3 status moves, confirm/reject the hypothesis, better/not better, flag revert, break-glass
    assert len(forms) == 9
    for form in forms:
        assert "hx-post=" in form
        assert '<input type="hidden" name="csrfmiddlewaretoken" value="">' in form


def test_console_push__form_posted_by_htmx__accepted_with_the_page_header(busy_incident, commander):
    client = Client(enforce_csrf_checks=True)
    client.force_login(commander)
    page = client.get(reverse("incident-console", args=[busy_incident.pk])).content.decode()
    token = re.search(r"""<body[^>]*hx-headers='\{"X-CSRFToken": "([^"]+)"\}'""", page).group(1)
    change = _drain(busy_incident, commander)  # the buttons arrive over the websocket
    action, fields = _form_with(_latest_push(busy_incident), "change-better")

    without_header = client.post(action, fields, HTTP_HX_REQUEST="true")
    assert without_header.status_code == 403
    response = client.post(action, fields, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 200 and b"change verified" in response.content
    change.refresh_from_db()
    assert change.status == "held"


def test_console_page__form_posted_without_htmx__accepted_with_the_hidden_field(
    busy_incident, commander
):
    change = _drain(busy_incident, commander)
    client = Client(enforce_csrf_checks=True)
    client.force_login(commander)
    console = reverse("incident-console", args=[busy_incident.pk])
    action, fields = _form_with(client.get(console).content.decode(), "change-better")
    assert fields["csrfmiddlewaretoken"]

    response = client.post(action, fields)

    assert response.status_code == 302 and response.url == console
    change.refresh_from_db()
    assert change.status == "held"
