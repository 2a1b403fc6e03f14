from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"

    def ready(self) -> None:
        from incidents import streams

        streams.register()

        from incidents.selectors import incident_id_for_reference
        from ledger.references import reference_register

        reference_register(kind="incident", resolve=incident_id_for_reference)

        from incidents import receivers  # noqa: F401  (connects signal receivers)
