from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"

    def ready(self) -> None:
        from live.streams import stream_kind_register

        stream_kind_register(kind="plan", permission="rollouts.view_plan")
        stream_kind_register(kind="flags", permission="rollouts.view_flag")
        stream_kind_register(kind="step", permission="rollouts.view_plan")

        from rollouts import receivers  # noqa: F401  (connects signal receivers)
