from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, roles and API tokens"

    def ready(self) -> None:
        from accounts import checks, receivers  # noqa: F401  (registers the demo password check)
        from accounts.roles import roles_sync_after_migrate

        # Permissions only exist after each app's post_migrate, so the role groups follow them.
        post_migrate.connect(roles_sync_after_migrate, dispatch_uid="accounts.roles_sync")
        receivers.connect()
