from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponse
from django.urls import reverse_lazy

from accounts.signin import signin_failed, signin_refusal, signin_succeeded
from ledger.services import ledger_append


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses a locked account or address before checking the password, and counts failures."""

    def clean(self) -> dict[str, Any]:
        username = self.data.get("username", "")
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        if refusal := signin_refusal(username=username, address=address):
            raise ValidationError(refusal, code="locked")
        try:
            cleaned = super().clean()
        except ValidationError:
            signin_failed(username=username, address=address)
            if refusal := signin_refusal(username=username, address=address):
                raise ValidationError(refusal, code="locked") from None  # this failure locked
            raise
        signin_succeeded(username=username)
        return cleaned


class SignInView(auth_views.LoginView):
    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form: Any) -> HttpResponse:
        # Django's login keeps what the anonymous session held under a new key; a session
        # planted in the browser before sign-in must carry nothing into the signed-in one.
        self.request.session.flush()
        return super().form_valid(form)


class PasswordChangeView(auth_views.PasswordChangeView):
    """Everyone changes their own password here (the admin site is for staff only)."""

    success_url = reverse_lazy("password-change")

    def form_valid(self, form: Any) -> HttpResponse:
        with transaction.atomic():
            response = super().form_valid(form)
            ledger_append(
                action="auth.password_changed",
                subject=self.request.user,
                actor=self.request.user,
                payload={"username": self.request.user.get_username()},
            )
        messages.success(self.request, "Password changed. Other sessions were signed out.")
        return response
