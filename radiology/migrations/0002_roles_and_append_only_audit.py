"""Creates the role groups and makes the audit table append-only in the database itself.

The model already refuses updates and deletes through the ORM; the triggers also stop raw SQL.
TRUNCATE stays possible (the test runner empties tables with it); row deletes and updates do not.
"""

from django.db import migrations

ROLE_GROUPS = ("clinician", "admin")

POSTGRES_TRIGGER = """
CREATE OR REPLACE FUNCTION radiology_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER radiology_auditevent_no_update BEFORE UPDATE OR DELETE ON radiology_auditevent
    FOR EACH ROW EXECUTE FUNCTION radiology_auditevent_append_only();
"""
POSTGRES_TRIGGER_REVERSE = """
DROP TRIGGER IF EXISTS radiology_auditevent_no_update ON radiology_auditevent;
DROP FUNCTION IF EXISTS radiology_auditevent_append_only();
"""
# SQLite has no TRUNCATE: Django's test flush deletes rows, so only updates are blocked there.
SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS radiology_auditevent_no_update BEFORE UPDATE ON radiology_auditevent
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
"""
SQLITE_TRIGGER_REVERSE = "DROP TRIGGER IF EXISTS radiology_auditevent_no_update;"


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


def add_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGER)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER)


def remove_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGER_REVERSE)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER_REVERSE)


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
        migrations.RunPython(add_triggers, remove_triggers),
    ]
