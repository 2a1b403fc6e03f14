from django.urls import path

from incidents import api

urlpatterns = [
    path("", api.incident_declare_api, name="api-incident-declare"),
    path("alertmanager", api.alertmanager_webhook, name="api-incident-alertmanager"),
    path("<int:incident_id>", api.incident_detail_api, name="api-incident"),
    path("<int:incident_id>/narration", api.narration_api, name="api-incident-narration"),
    path("<int:incident_id>/triage", api.triage_api, name="api-incident-triage"),
    path("<int:incident_id>/flag-revert", api.flag_revert_api, name="api-incident-flag-revert"),
]
