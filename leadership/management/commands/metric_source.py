import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from leadership.selectors import metric_sources_listed
from leadership.services import metric_source_edit, metric_source_register, metric_source_retire
from signals.models import MetricSource
from signals.prometheus import PROBE_QUERY, prometheus_probe
from signals.services import SourceInvalid

ORIGIN = "manage.py metric_source"


def _auth_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--auth",
        choices=["none", "bearer", "basic"],
        help="how to authenticate: a bearer token, or basic auth with --username",
    )
    parser.add_argument("--username", help="basic auth only")
    parser.add_argument(
        "--secret",
        metavar="env:NAME",
        help="where the token or password is: an environment variable, e.g. env:PROM_TOKEN "
        "(Stepwise never stores credentials)",
    )


class Command(BaseCommand):
    help = (
        "Register, list, test, change and retire Prometheus metric sources "
        "(docs/metric-sources.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        add = actions.add_parser("add", help="register a Prometheus source")
        add.add_argument("name")
        add.add_argument("--url", required=True, help="base URL of the Prometheus HTTP API")
        add.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        add.add_argument("--no-verify-tls", action="store_true", help="accept any certificate")
        _auth_arguments(add)
        edit = actions.add_parser("edit", help="change a source's settings")
        edit.add_argument("name")
        edit.add_argument("--url")
        edit.add_argument("--timeout", type=float)
        edit.add_argument("--verify-tls", action=argparse.BooleanOptionalAction, default=None)
        _auth_arguments(edit)
        actions.add_parser("list", help="every source, who reads it, retired ones last")
        test = actions.add_parser("test", help="run one live query and show the answer")
        test.add_argument("name")
        test.add_argument("--query", default=PROBE_QUERY, help=f"PromQL (default {PROBE_QUERY})")
        retire = actions.add_parser("retire", help="no new SLO or step may read it")
        retire.add_argument("name")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except SourceInvalid as exc:
            raise CommandError(str(exc)) from None

    def _add(
        self, *, name: str, url: str, timeout: float, no_verify_tls: bool, **options: Any
    ) -> None:
        source = metric_source_register(
            actor=None,
            origin=ORIGIN,
            name=name,
            url=url,
            timeout_seconds=timeout,
            verify_tls=not no_verify_tls,
            **self._auth(options),
        )
        self.stdout.write(f"registered {source.name} ({source.url})")

    def _edit(
        self,
        *,
        name: str,
        url: str | None,
        timeout: float | None,
        verify_tls: bool | None,
        **options: Any,
    ) -> None:
        given = {"url": url, "timeout_seconds": timeout, "verify_tls": verify_tls}
        changes = {key: value for key, value in given.items() if value is not None}
        changes |= self._auth(options)
        if not changes:
            raise CommandError("nothing to change: give --url, --timeout, --verify-tls or --auth")
        source, changed = metric_source_edit(actor=None, origin=ORIGIN, name=name, changes=changes)
        if not changed:
            self.stdout.write(f"unchanged {source.name}")
        for key in changed:
            self.stdout.write(f"changed {source.name} {key}")

    def _auth(self, options: dict[str, Any]) -> dict[str, str]:
        auth, username, secret = options.get("auth"), options.get("username"), options.get("secret")
        if auth is None:
            if username is not None or secret is not None:
                raise CommandError("--username and --secret go with --auth bearer or --auth basic")
            return {}
        return {
            "auth_scheme": "" if auth == "none" else auth,
            "auth_username": username or "",
            "auth_secret_ref": secret or "",
        }

    def _list(self, **options: Any) -> None:
        listed = metric_sources_listed()
        if not listed:
            self.stdout.write("no metric source is registered")
        for source, users in listed:
            if source.kind != MetricSource.Kind.PROMETHEUS:
                self.stdout.write(f"{source.name}  built-in store")
                continue
            auth = source.get_auth_scheme_display()
            if source.auth_secret_ref:
                auth += f" from {source.auth_secret_ref}"
            elif source.auth_header:
                auth = "legacy header (hidden)"
            state = f"retired {source.retired_at:%Y-%m-%d}" if source.is_retired else "active"
            readers = ", ".join(users) or "nobody"
            self.stdout.write(
                f"{source.name}  {source.url}  {state}  auth: {auth}  "
                f"timeout {source.timeout_seconds:g} s  read by: {readers}"
            )

    def _test(self, *, name: str, query: str, **options: Any) -> None:
        source = MetricSource.objects.filter(name=name, kind=MetricSource.Kind.PROMETHEUS).first()
        if source is None:
            raise CommandError(f"no Prometheus metric source named {name!r}")
        probe = prometheus_probe(source=source, promql=query)
        if not probe.ok:
            raise CommandError(f"{probe.query}: {probe.error}")
        self.stdout.write(f"{source.name}: {probe.query} = {probe.value:g} ({probe.seconds:.2f} s)")

    def _retire(self, *, name: str, **options: Any) -> None:
        source, users = metric_source_retire(actor=None, origin=ORIGIN, name=name)
        self.stdout.write(f"retired {source.name}: no new SLO or step may read it")
        if users:
            self.stderr.write(
                self.style.WARNING(
                    f"still read by {', '.join(users)}: they keep reading {source.name} until "
                    "they are changed to another source"
                )
            )
