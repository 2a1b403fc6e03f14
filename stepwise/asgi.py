import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepwise.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import path  # noqa: E402

from accounts.checks import demo_passwords_check  # noqa: E402
from core.metrics import metrics_process_exit  # noqa: E402
from live.consumers import LiveConsumer  # noqa: E402
from live.origin import SameOriginValidator  # noqa: E402
from rollouts.ofrep import ofrep_route, serving_start  # noqa: E402


def _demo_passwords_problems() -> list:
    # uvicorn (with --workers) imports this module inside its event loop, where Django refuses
    # database access: ask from a thread of our own, and close its connection there.
    def check() -> list:
        try:
            return demo_passwords_check()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(check).result()


# uvicorn does not run Django's system checks: refuse to serve a production site whose accounts
# still have the published demo password.
if problems := _demo_passwords_problems():
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("; ".join(f"{p.msg} ({p.hint})" for p in problems))


async def lifespan(scope: dict, receive: Callable, send: Callable) -> None:
    """A server's startup (uvicorn sends it; a test's communicator does not): only a serving
    process listens for flag and token changes and trusts its memory."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            serving_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            metrics_process_exit()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
        # OFREP ahead of Django's handler: a flag evaluation is answered from memory.
        "http": ofrep_route(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            SameOriginValidator(
                AuthMiddlewareStack(URLRouter([path("ws/live/", LiveConsumer.as_asgi())]))
            )
        ),
    }
)
