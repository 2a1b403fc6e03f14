from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"

    def ready(self) -> None:
        from rollouts import streams

        streams.register()

        from ledger.references import reference_register
        from rollouts.selectors import plan_id_for_key, step_id_for_key

        reference_register(kind="plan", resolve=plan_id_for_key)
        reference_register(kind="step", resolve=step_id_for_key)

        from rollouts import receivers  # noqa: F401  (connects signal receivers)
