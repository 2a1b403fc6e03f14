from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts.views import PasswordChangeView, SignInView
from stepwise import views

urlpatterns = [
    path("login/", SignInView.as_view(), name="login"),
    path("password/", PasswordChangeView.as_view(), name="password-change"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("api/schema", views.api_schema, name="api-schema"),
    path("metrics", views.metrics, name="metrics"),
    path("", include("ledger.urls")),
    path("", include("signals.urls")),
    path("", include("rollouts.urls")),
    path("", include("incidents.urls")),
    path("api/incidents/", include("incidents.api_urls")),
    path("", include("leadership.urls")),
    path("", include("accounts.urls")),
    path("", include("leadership.api_urls")),
    path("admin/", admin.site.urls),
]

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.page_not_found
handler500 = views.server_error
