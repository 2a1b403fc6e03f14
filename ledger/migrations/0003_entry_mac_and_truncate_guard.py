from django.conf import settings
from django.db import migrations, models

TRUNCATE_GUARD = """
CREATE OR REPLACE FUNCTION ledger_refuse_truncate() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger_ledgerentry is append-only: TRUNCATE refused'
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON ledger_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
"""
TRUNCATE_GUARD_REMOVE = """
DROP TRIGGER IF EXISTS ledger_no_truncate ON ledger_ledgerentry;
DROP FUNCTION IF EXISTS ledger_refuse_truncate();
"""


def sign_existing(apps, schema_editor):
    """Entries written before MACs existed get theirs now, with this installation's key; the
    owner running migrations may pass the append-only trigger for exactly this."""
    from ledger.anchor import entry_mac

    entry_model = apps.get_model("ledger", "LedgerEntry")
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres:
        schema_editor.execute("ALTER TABLE ledger_ledgerentry DISABLE TRIGGER ledger_append_only")
    for pk, digest in entry_model.objects.values_list("pk", "hash").iterator():
        entry_model.objects.filter(pk=pk).update(mac=entry_mac(digest))
    if postgres:
        schema_editor.execute("ALTER TABLE ledger_ledgerentry ENABLE TRIGGER ledger_append_only")
        # Production only: Django's test runner empties tables with TRUNCATE between tests.
        if settings.PRODUCTION:
            schema_editor.execute(TRUNCATE_GUARD, params=None)


def unsign(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRUNCATE_GUARD_REMOVE, params=None)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_append_only_trigger")]

    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="mac",
            field=models.CharField(
                blank=True,
                help_text="HMAC of `hash` with the ledger key (ledger/anchor.py)",
                max_length=64,
            ),
        ),
        migrations.RunPython(sign_existing, unsign),
    ]
