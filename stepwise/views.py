from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from stepwise.health import readiness_checks


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    ready = all(c.ok for c in checks)
    signed_in = request.user.is_authenticated
    return JsonResponse(
        {
            "status": "ready" if ready else "not ready",
            # Hostnames and database errors are for operators: an anonymous probe (a load
            # balancer) needs only what is down.
            "checks": {
                c.name: {"ok": c.ok, **({"detail": c.detail} if signed_in else {})}
                for c in checks
            },
        },
        status=200 if ready else 503,
    )
