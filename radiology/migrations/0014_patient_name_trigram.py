"""The queue's name search at scale: a trigram index on UPPER(name), PostgreSQL only.

selectors.study_search matches UPPER(name) LIKE 'TERM%' OR LIKE '% TERM%' (any word of the name); a
B-tree cannot serve the second, so at 222,000 patients every search read the whole table (440 ms under
load). pg_trgm's GIN index serves both patterns, beside the UPPER(mrn) index, as one bitmap OR.
SQLite (the embedded default, the unit tests) keeps its table scan: it is not the scale target.
"""

from django.db import migrations

INDEX = "patient_name_upper_trgm_idx"


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX} ON radiology_patient USING gin (UPPER(name) gin_trgm_ops)"
    )


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("radiology", "0013_dicom_instance_upload_source")]

    operations = [migrations.RunPython(create, drop)]
