from django.contrib import admin

from core.admin import ReadOnlyAdmin
from rollouts.models import Flag, FlagVersion, Plan, Step


@admin.register(Plan)
class PlanAdmin(ReadOnlyAdmin):
    list_display = ("key", "name", "owner", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("key", "name", "owner")


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "title", "kind", "status", "owner_team")
    list_filter = ("status", "kind")
    list_select_related = ("plan",)
    search_fields = ("key", "title", "plan__key")


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ("key", "kind", "owner", "created_at")
    list_filter = ("kind",)
    search_fields = ("key", "owner")


@admin.register(FlagVersion)
class FlagVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "flag",
        "number",
        "enabled",
        "rollout_percentage",
        "source",
        "author",
        "created_at",
    )
    list_filter = ("source", "enabled")
    list_select_related = ("flag", "author")
    search_fields = ("flag__key", "reason")
