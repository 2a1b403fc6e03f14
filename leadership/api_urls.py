from django.urls import path

from leadership import api

# `register` before `<name>`: it is a reserved source name (signals.services.RESERVED_NAMES).
urlpatterns = [
    path("api/metric-sources", api.metric_sources_api, name="api-metric-sources"),
    path(
        "api/metric-sources/register",
        api.metric_source_register_api,
        name="api-metric-source-register",
    ),
    path("api/metric-sources/<str:name>", api.metric_source_api, name="api-metric-source"),
    path(
        "api/metric-sources/<str:name>/edit",
        api.metric_source_edit_api,
        name="api-metric-source-edit",
    ),
    path(
        "api/metric-sources/<str:name>/test",
        api.metric_source_test_api,
        name="api-metric-source-test",
    ),
    path(
        "api/metric-sources/<str:name>/retire",
        api.metric_source_retire_api,
        name="api-metric-source-retire",
    ),
]
