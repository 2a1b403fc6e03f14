from django.urls import path

from accounts import views

urlpatterns = [
    path("integrations/", views.integrations, name="integrations"),
    path("integrations/tokens", views.integration_token_new, name="integration-token-new"),
    path(
        "integrations/tokens/<int:token_id>/revoke",
        views.integration_token_revoke,
        name="integration-token-revoke",
    ),
]
