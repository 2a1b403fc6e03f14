from django.urls import path

from incidents import views

urlpatterns = [
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/declare", views.incident_declare, name="incident-declare"),
    path("incidents/<int:incident_id>/", views.incident_console, name="incident-console"),
    path("incidents/<int:incident_id>/narrate", views.narrate, name="incident-narrate"),
    path("incidents/<int:incident_id>/status", views.status_change, name="incident-status"),
    path("incidents/<int:incident_id>/triage", views.triage, name="incident-triage"),
    path(
        "incidents/<int:incident_id>/hypothesis",
        views.hypothesis_state,
        name="incident-hypothesis",
    ),
    path(
        "incidents/<int:incident_id>/hypothesis/close",
        views.hypothesis_close,
        name="incident-hypothesis-close",
    ),
    path("incidents/<int:incident_id>/change", views.change_start, name="incident-change"),
    path(
        "incidents/<int:incident_id>/flag-settings",
        views.flag_settings,
        name="incident-flag-settings",
    ),
    path(
        "incidents/<int:incident_id>/change/verify",
        views.change_verify,
        name="incident-change-verify",
    ),
    path("incidents/<int:incident_id>/flag-revert", views.flag_revert, name="incident-flag-revert"),
    path(
        "incidents/<int:incident_id>/plan-release",
        views.plan_release,
        name="incident-plan-release",
    ),
    path("incidents/<int:incident_id>/break-glass", views.break_glass, name="incident-break-glass"),
    path("incidents/<int:incident_id>/handover", views.handover, name="incident-handover"),
    path("incidents/<int:incident_id>/roles", views.role_assign, name="incident-role"),
    path(
        "incidents/<int:incident_id>/decisions",
        views.incident_decision,
        name="incident-decision",
    ),
    path(
        "incidents/<int:incident_id>/action-items",
        views.action_item_add,
        name="incident-action-item",
    ),
    path(
        "incidents/<int:incident_id>/action-items/done",
        views.action_item_done,
        name="incident-action-item-done",
    ),
    path(
        "incidents/<int:incident_id>/postmortem",
        views.incident_postmortem,
        name="incident-postmortem",
    ),
    path(
        "incidents/<int:incident_id>/postmortem.md",
        views.incident_postmortem_markdown,
        name="incident-postmortem-md",
    ),
    path(
        "incidents/<int:incident_id>/postmortem/write",
        views.postmortem_write,
        name="incident-postmortem-write",
    ),
]
