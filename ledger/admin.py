from django.contrib import admin

from core.admin import ReadOnlyAdmin
from ledger.models import LedgerEntry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    """Append-only: ledger_append is the only writer, and PostgreSQL refuses UPDATE and DELETE."""

    list_display = ("seq", "created_at", "actor_label", "action", "subject_type", "subject_id")
    list_filter = ("action", "subject_type")
    search_fields = ("action", "actor_label", "subject_id")
    show_full_result_count = False  # the ledger only grows: no second COUNT(*) per page
