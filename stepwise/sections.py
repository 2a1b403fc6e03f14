"""Navigation sections whose pages arrive with later work. Each says plainly what will live there."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

SECTIONS = {
    "slos": ("SLOs", "Service level objectives with error budgets and burn rates."),
    "decisions": (
        "Decisions",
        "Every adapt, persist and kill call: believed, observed, decided and why.",
    ),
}


def section(request: HttpRequest, key: str) -> HttpResponse:
    title, purpose = SECTIONS[key]
    return render(
        request, "section_empty.html", {"section": key, "title": title, "purpose": purpose}
    )


urlpatterns = [path(f"{key}/", section, {"key": key}, name=key) for key in SECTIONS]
