import io

import pytest
from django.core.management import CommandError, call_command

from ledger.models import LedgerEntry
from rollouts.models import Plan
from tests.factories import UserFactory
from tests.rollouts.plan_factories import EXAMPLE, plan_yaml, step_doc

# The example plan gates two steps on the login SLO, which must exist to apply it.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("example_slos")]


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        err.write(f"CommandError: {exc}\n")
        code = exc.returncode
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def tty(monkeypatch):
    """Standard input is a terminal; `tty("y")` is what the person types."""

    def answer(text: str) -> None:
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("builtins.input", lambda prompt: text)

    return answer


def _write(tmp_path, text: str):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return str(path)


def test_apply_plan__invalid_file__every_error_with_line_and_exit_1(tmp_path):
    text = plan_yaml(step_doc("a", depends_on=["missing"]), step_doc("b", kind="deploy"))
    code, _, err = _run("apply_plan", _write(tmp_path, text))
    assert code == 1
    assert "spec.steps[0].depends_on[0]: unknown step 'missing' (line 20)" in err
    assert (
        "spec.steps[1]: missing required field 'service': deploy steps name the service they ship (line 32)"
        in err
    )
    assert "has 2 problems; nothing applied" in err
    assert not Plan.objects.exists()


def test_apply_plan__missing_or_binary_file__exit_1_without_traceback(tmp_path):
    code, _, err = _run("apply_plan", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err and "Traceback" not in err
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = _run("apply_plan", str(binary))
    assert code == 1 and "is not UTF-8 text" in err


def test_apply_plan__non_interactive_without_yes__diff_shown_exit_2_nothing_written():
    code, out, err = _run("apply_plan", str(EXAMPLE))
    assert code == 2
    assert (
        "+ step login-5: New login for 5% of sign-ins (flag_ramp, owner platform-identity)" in out
    )
    assert "pass --yes" in err
    assert not Plan.objects.exists() and not LedgerEntry.objects.exists()


def test_apply_plan__dry_run__diff_exit_0_nothing_written():
    code, out, _ = _run("apply_plan", str(EXAMPLE), "--dry-run")
    assert code == 0 and "+ plan identity-migration (new)" in out
    assert not Plan.objects.exists()


def test_apply_plan__yes__applied_then_second_run_no_changes():
    code, out, _ = _run("apply_plan", str(EXAMPLE), "--yes")
    assert code == 0 and "applied plan identity-migration" in out
    entry = LedgerEntry.objects.get(action="plan.applied")
    assert entry.actor_label == "manage.py apply_plan"
    code, out, _ = _run("apply_plan", str(EXAMPLE))
    assert code == 0 and "plan identity-migration: no changes" in out
    assert LedgerEntry.objects.filter(action="plan.applied").count() == 1


def test_apply_plan__terminal_confirms__applied(tty):
    tty("y")
    code, _, _ = _run("apply_plan", str(EXAMPLE))
    assert code == 0 and Plan.objects.filter(key="identity-migration").exists()


def test_apply_plan__terminal_declines__exit_2_nothing_written(tty):
    tty("n")
    code, _, err = _run("apply_plan", str(EXAMPLE))
    assert code == 2 and "not applied" in err and not Plan.objects.exists()


def test_apply_plan__as_user__ledger_names_them_and_viewer_refused():
    tpm, viewer = UserFactory(role="tpm"), UserFactory(role="viewer")
    code, _, err = _run("apply_plan", str(EXAMPLE), "--yes", "--as", viewer.username)
    assert code == 1 and "may not apply plans" in err
    code, _, _ = _run("apply_plan", str(EXAMPLE), "--yes", "--as", tpm.username)
    assert code == 0
    assert LedgerEntry.objects.get(action="plan.applied").actor_label == tpm.username


def test_apply_plan__refused_by_plan_state__reason_and_exit_1(tmp_path, make_plan):
    make_plan([{"key": "a", "status": "running"}], key="checkout")
    code, _, err = _run("apply_plan", _write(tmp_path, plan_yaml(step_doc("b"))), "--yes")
    assert code == 1
    assert "refused: step 'a' is running: a started step cannot be removed" in err


def test_export_plan__known_and_unknown_key():
    _run("apply_plan", str(EXAMPLE), "--yes")
    code, out, _ = _run("export_plan", "identity-migration")
    assert code == 0 and out.startswith("# Plan identity-migration, exported from Stepwise.")
    assert "flag: {key: new-login, percentage: 25}" in out
    code, _, err = _run("export_plan", "nope")
    assert code == 1 and "no plan with key 'nope'" in err
