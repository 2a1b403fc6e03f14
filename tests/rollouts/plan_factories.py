"""Plan files for the plan-as-code tests: plain data turned into YAML, valid unless told otherwise."""

from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "identity-migration.yaml"


def step_doc(key: str, **fields: Any) -> dict[str, Any]:
    """A valid manual step; `fields` override or add (None removes a field)."""
    doc: dict[str, Any] = {
        "key": key,
        "title": f"Step {key}",
        "owner": "platform",
        "kind": "manual",
        "targets": ["eu-west"],
        "depends_on": [],
        "revert": {"rollback_command": f"undo {key}"},
        "verification": {
            "pass": "error_rate < 0.01",
            "fail": "error_rate > 0.02",
            "on_fail": "pause_plan",
            "measurements": {
                "error_rate": {"metric": "http_error_ratio", "aggregation": "avg", "window": "5m"}
            },
        },
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


def plan_doc(*steps: dict[str, Any], key: str = "checkout", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stepwise/v1",
        "kind": "Plan",
        "metadata": {"key": key, "name": key.title()},
        "spec": {
            "goal": "ship it",
            "owner": "platform",
            "teams": ["platform", "web"],
            **spec,
            "steps": list(steps) or [step_doc("a")],
        },
    }


def plan_yaml(*steps: dict[str, Any], key: str = "checkout", **spec: Any) -> str:
    return yaml.safe_dump(plan_doc(*steps, key=key, **spec), sort_keys=False)


def example_text() -> str:
    return EXAMPLE.read_text()
