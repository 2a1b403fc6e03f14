from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"

    def ready(self) -> None:
        from rollouts import streams

        streams.register()

        from rollouts import receivers  # noqa: F401  (connects signal receivers)
