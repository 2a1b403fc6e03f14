from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"

    def ready(self) -> None:
        from live.streams import stream_kind_register

        stream_kind_register(kind="incident", permission="incidents.view_incident")

        from incidents import receivers  # noqa: F401  (connects signal receivers)
