from django.urls import include, path

from rollouts import api, views

urlpatterns = [
    path("", views.portfolio, name="portfolio"),
    path("plans/", include("rollouts.plan_import_urls")),
    path("plans/<slug:key>/", views.plan_detail, name="plan-detail"),
    path("plans/<slug:key>/action", views.plan_action, name="plan-action"),
    path("plans/<slug:key>/assumptions/add", views.assumption_add_view, name="assumption-add"),
    path(
        "plans/<slug:key>/assumptions/<int:assumption_id>/edit",
        views.assumption_edit_view,
        name="assumption-edit",
    ),
    path(
        "plans/<slug:key>/assumptions/status",
        views.assumption_status_view,
        name="assumption-status",
    ),
    path(
        "plans/<slug:key>/assumption-policy",
        views.plan_assumption_policy,
        name="plan-assumption-policy",
    ),
    path("plans/<slug:key>/decisions/", views.plan_decisions_view, name="plan-decisions"),
    path(
        "plans/<slug:key>/decisions.md",
        views.plan_decisions_markdown_view,
        name="plan-decisions-markdown",
    ),
    path(
        "plans/<slug:key>/decisions/<int:decision_id>/",
        views.decision_detail,
        name="decision-detail",
    ),
    path("plans/<slug:key>/steps/<slug:step_key>/", views.step_detail, name="step-detail"),
    path("plans/<slug:key>/steps/<slug:step_key>/action", views.step_action, name="step-action"),
    path(
        "plans/<slug:key>/steps/<slug:step_key>/override-budget",
        views.step_override_budget,
        name="step-override-budget",
    ),
    path(
        "plans/<slug:key>/steps/<slug:step_key>/confirm",
        views.step_confirm_target,
        name="step-confirm",
    ),
    path(
        "plans/<slug:key>/deviations/<int:deviation_id>/reconcile",
        views.deviation_action,
        name="deviation-reconcile",
    ),
    path("flags/", views.flags_board, name="flags"),
    path("flags/<slug:flag_key>/", views.flag_detail, name="flag-detail"),
    path("flags/<slug:flag_key>/revert", views.flag_revert_view, name="flag-revert"),
    path("flags/<slug:flag_key>/restore", views.flag_restore_view, name="flag-restore"),
    path("flags/<slug:flag_key>/change", views.flag_change_view, name="flag-change"),
    path("api/deploys", api.deploy_webhook, name="api-deploys"),
    path("api/steps/<int:step_id>/action", api.step_action, name="api-step-action"),
]
