from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Evolution ledger"

    def ready(self) -> None:
        from ledger import streams

        streams.register()
