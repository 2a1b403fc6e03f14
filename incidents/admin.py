from django.contrib import admin

from core.admin import ReadOnlyAdmin
from incidents.models import Incident


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ("pk", "title", "severity", "status", "source", "declared_at")
    list_filter = ("status", "severity", "source")
    search_fields = ("title",)
