from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"

    def ready(self) -> None:
        from incidents import streams

        streams.register()

        from incidents.selectors import incident_id_for_reference, incident_plan_holds
        from ledger.references import reference_register
        from rollouts.gates import plan_hold_source_register

        reference_register(kind="incident", resolve=incident_id_for_reference)
        plan_hold_source_register(incident_plan_holds)

        from incidents import receivers  # noqa: F401  (connects signal receivers)
