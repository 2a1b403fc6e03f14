from django.urls import path

from leadership import views

urlpatterns = [
    path("slos/", views.slo_overview, name="slos"),
    path("slos/import", views.slo_import, name="slo-import"),
    path("slos/openslo.yaml", views.slo_export, name="slo-export-all"),
    path("slos/alerts/<int:alert_id>/declare", views.slo_alert_declare, name="slo-alert-declare"),
    path("slos/<slug:name>/", views.slo_detail, name="slo-detail"),
    path("slos/<slug:name>/openslo.yaml", views.slo_export, name="slo-export"),
    path("metric-sources/", views.metric_sources, name="metric-sources"),
    path("metric-sources/<str:name>/", views.metric_source_detail, name="metric-source-detail"),
    path("metric-sources/<str:name>/test", views.metric_source_test, name="metric-source-test"),
    path(
        "metric-sources/<str:name>/retire",
        views.metric_source_retire_view,
        name="metric-source-retire",
    ),
    path("risk/", views.plans_at_risk, name="plans-at-risk"),
    path("decisions/", views.decisions, name="decisions"),
]
