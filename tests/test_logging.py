import io
import json
import logging

import pytest

from stepwise.logging import JsonFormatter


def test_json_formatter__extra_fields_and_exception__one_parseable_line():
    record = logging.LogRecord(
        "stepwise.test", logging.ERROR, __file__, 1, "step %s failed", ("gw",), None
    )
    record.plan_id = 7
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line.replace("\\n", "")
    entry = json.loads(line)
    assert (
        entry["message"] == "step gw failed" and entry["level"] == "ERROR" and entry["plan_id"] == 7
    )
    assert "ValueError: boom" in entry["exception"]


def _console_handlers() -> list[logging.StreamHandler]:
    """Every plain StreamHandler in the logging tree: ours on root, and any a library added."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if type(h) is logging.StreamHandler
    ]


@pytest.mark.django_db
def test_permission_denied__development__one_warning_line_without_traceback(
    client, role_user, settings, caplog
):
    settings.DEBUG = True  # as ./bin/run serves: Django's own console handler is live then
    client.force_login(role_user("viewer"))
    printed = io.StringIO()
    handlers = _console_handlers()
    streams = [h.setStream(printed) for h in handlers]
    try:
        with caplog.at_level(logging.INFO):
            response = client.post("/ledger/record", {"kind": "note", "summary": "x"})
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)

    assert response.status_code == 403
    [record] = [r for r in caplog.records if r.name.startswith("django")]
    assert (record.levelname, record.getMessage()) == (
        "WARNING",
        "Forbidden (Permission denied): /ledger/record",
    )
    assert record.exc_info is None
    lines = printed.getvalue().splitlines()
    assert len(lines) == 1 and "Forbidden (Permission denied): /ledger/record" in lines[0]
