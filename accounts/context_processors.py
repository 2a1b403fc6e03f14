from django.http import HttpRequest

from accounts.roles import user_roles


def roles(request: HttpRequest) -> dict:
    return {"user_roles": user_roles(getattr(request, "user", None))}
