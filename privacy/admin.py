"""Erasure receipts and exports in the admin: read-only, they are the record of what was done."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from privacy.models import ErasureReceipt, UserExport
from supworker import storage


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ErasureReceipt)
class ErasureReceiptAdmin(ReadOnly):
    list_display = ("subject_short", "started_at", "finished_at", "requests", "removed")
    list_filter = ("finished_at",)
    search_fields = ("subject",)
    fields = ("subject", "started_at", "finished_at", "requests", "counts_table")
    readonly_fields = fields

    @admin.display(description="subject")
    def subject_short(self, obj: ErasureReceipt) -> str:
        return obj.subject[:16]

    @admin.display(description="removed, by table")
    def counts_table(self, obj: ErasureReceipt) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.counts, indent=2, sort_keys=True))


@admin.register(UserExport)
class UserExportAdmin(ReadOnly):
    list_display = ("subject_short", "created_at", "finished_at", "bytes", "expires_at")
    fields = ("subject", "job_id", "key", "bytes", "counts", "created_at", "finished_at", "expires_at")
    readonly_fields = fields

    @admin.display(description="subject")
    def subject_short(self, obj: UserExport) -> str:
        return obj.subject[:16]

    def delete_model(self, request: HttpRequest, obj: UserExport) -> None:
        self.delete_queryset(request, UserExport.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[UserExport]) -> None:
        """An export deleted early goes with its archive: nothing else would remove that file."""
        storage.delete(queryset.values_list("key", flat=True))
        queryset.delete()
