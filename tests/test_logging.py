import json
import logging

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
