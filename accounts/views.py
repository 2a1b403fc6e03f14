from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import IntegrationTokenForm, TokenRevokeForm
from accounts.roles import MACHINE_ROLES, user_is_admin
from accounts.selectors import api_token_rows
from accounts.services import api_token_revoke, integration_token_create
from accounts.signin import signin_failed, signin_refusal, signin_succeeded
from core.http import form_submit
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


def admin_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not user_is_admin(request.user):
            raise PermissionDenied("integration tokens are managed by the admin account only")
        return view(request, *args, **kwargs)

    return wrapped


def _integrations_page(**context: Any) -> dict[str, Any]:
    return {
        "form": IntegrationTokenForm(),
        "machine_roles": MACHINE_ROLES,
        "rows": api_token_rows(),
        **context,
    }


@require_GET
@admin_required
def integrations(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/integrations.html", _integrations_page())


@require_POST
@never_cache  # the answer holds a secret shown once: no browser or proxy may keep it
@admin_required
def integration_token_new(request: HttpRequest) -> HttpResponse:
    form = IntegrationTokenForm(request.POST)
    created, error, status = form_submit(
        form, lambda d: integration_token_create(actor=request.user, **d)
    )
    context = {"form": IntegrationTokenForm() if created else form, "error": error}
    if created:
        context["token"], context["raw"] = created
    if request.htmx:
        # The new token also joins the list, swapped in beside the form's answer.
        rows = api_token_rows() if created else None
        return render(
            request,
            "accounts/_token_create.html",
            {**context, "rows": rows, "oob": True},
            status=status,
        )
    return render(
        request, "accounts/integrations.html", _integrations_page(**context), status=status
    )


@require_POST
@admin_required
def integration_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    form = TokenRevokeForm(request.POST)
    _, error, status = form_submit(
        form,
        lambda d: api_token_revoke(token_id=token_id, actor=request.user, reason=d["reason"]),
    )
    if request.htmx:
        rows = api_token_rows(token_id=token_id)
        if not rows:
            return render(request, "core/_action_result.html", {"error": error}, status=status)
        return render(
            request,
            "accounts/_token_row.html",
            {"row": rows[0], "error": error, "revoke_form": form, "revoke_done": not error},
            status=status,
        )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, "Token revoked: it is refused from now on.")
    return redirect("integrations")
