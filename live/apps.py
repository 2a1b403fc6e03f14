from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "live"
    verbose_name = "Live push"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from live.receivers import close_sockets_at_logout

        user_logged_out.connect(close_sockets_at_logout, dispatch_uid="live.close_at_logout")
