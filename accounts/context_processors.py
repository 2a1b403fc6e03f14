from django.http import HttpRequest

from accounts.roles import user_is_admin, user_roles


def roles(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    return {"user_roles": user_roles(user), "user_is_admin": user_is_admin(user)}
