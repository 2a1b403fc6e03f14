from django.urls import path

from signals import api

app_name = "signals"
urlpatterns = [
    path("api/metrics/ingest", api.metrics_ingest, name="api-ingest"),
]
