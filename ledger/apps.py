from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Evolution ledger"

    def ready(self) -> None:
        from live.streams import stream_kind_register

        stream_kind_register(kind="ledger", permission="ledger.view_ledgerentry")
