from django.conf import settings
from django.db import models
from django.utils import timezone

SCOPES = {
    "ledger:read": "read the ledger and verify the chain",
    "ledger:write": "record manual ledger entries",
    "flags:evaluate": "evaluate feature flags over OFREP",
    "metrics:write": "ingest metric samples",
    "metrics:read": "scrape Stepwise's own metrics (/metrics)",
    "deploys:write": "report deploys through the webhook",
    "incidents:write": "declare incidents and post alerts",
    "plans:write": "apply plans and drive steps",
    "sources:read": "list metric sources and who reads them",
    "sources:write": "register, change, test and retire metric sources",
}


class ApiToken(models.Model):
    """A machine credential. Only a SHA-256 digest is stored; the token is shown once at creation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, help_text="first characters, to recognise a token in lists and logs"
    )
    digest = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="api_token_name_unique_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def state(self, now=None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_usable(now) else "expired"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes
