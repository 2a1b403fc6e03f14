from django.urls import include, path

from rollouts import api, views

urlpatterns = [
    path("", views.portfolio, name="portfolio"),
    path("plans/", include("rollouts.plan_import_urls")),
    path("plans/<slug:key>/", views.plan_detail, name="plan-detail"),
    path("plans/<slug:key>/action", views.plan_action, name="plan-action"),
    path("plans/<slug:key>/steps/<slug:step_key>/", views.step_detail, name="step-detail"),
    path("plans/<slug:key>/steps/<slug:step_key>/action", views.step_action, name="step-action"),
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
