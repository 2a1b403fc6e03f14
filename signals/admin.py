from django.contrib import admin

from core.admin import ReadOnlyAdmin
from signals.models import SLO, MetricSource


@admin.register(MetricSource)
class MetricSourceAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "url", "timeout_seconds", "verify_tls")
    exclude = ("auth_header",)  # a credential: never shown


@admin.register(SLO)
class SLOAdmin(ReadOnlyAdmin):
    list_display = ("name", "service", "kind", "objective", "window_text", "source")
    list_filter = ("kind", "service")
    list_select_related = ("source",)
    search_fields = ("name", "service")
