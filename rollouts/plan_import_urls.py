"""Plan import and export, included by the project under `plans/`."""

from django.urls import path

from rollouts import plan_import

urlpatterns = [
    path("import/", plan_import.plan_import, name="plan-import"),
    path("<slug:key>/export.yaml", plan_import.plan_export_view, name="plan-export"),
]
