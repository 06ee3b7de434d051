"""Studies per state and body region (radiology.tallies.StudyTally), kept by triggers on radiology_study so
that every writer is counted, and filled in from the studies already there: the queue's tab counts read
a few dozen rows instead of counting 333,000 index entries a page.

On PostgreSQL the triggers are deferred to commit: by then the transaction holds the audit chain's head
row (every change of a study's state is audited), so the counters are always taken in one order after it
and two writers cannot deadlock on them. SQLite has one writer at a time and no deferred triggers.
"""

from django.db import migrations, models

from radiology.migrations._per_vendor import run_per_vendor

POSTGRESQL = [
    """
    CREATE FUNCTION radiology_study_tally() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE radiology_studytally SET studies = studies - 1
            WHERE state = OLD.state AND body_region = OLD.body_region;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO radiology_studytally (state, body_region, studies)
            VALUES (NEW.state, NEW.body_region, 1)
            ON CONFLICT (state, body_region) DO UPDATE SET studies = radiology_studytally.studies + 1;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE CONSTRAINT TRIGGER study_tally_insert_delete AFTER INSERT OR DELETE ON radiology_study
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION radiology_study_tally()
    """,
    """
    CREATE CONSTRAINT TRIGGER study_tally_update AFTER UPDATE OF state, body_region ON radiology_study
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.body_region IS DISTINCT FROM NEW.body_region)
    EXECUTE FUNCTION radiology_study_tally()
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER study_tally_update ON radiology_study",
    "DROP TRIGGER study_tally_insert_delete ON radiology_study",
    "DROP FUNCTION radiology_study_tally()",
]
SQLITE = [
    """
    CREATE TRIGGER study_tally_insert AFTER INSERT ON radiology_study BEGIN
        INSERT OR IGNORE INTO radiology_studytally (state, body_region, studies)
        VALUES (NEW.state, NEW.body_region, 0);
        UPDATE radiology_studytally SET studies = studies + 1
        WHERE state = NEW.state AND body_region = NEW.body_region;
    END
    """,
    """
    CREATE TRIGGER study_tally_delete AFTER DELETE ON radiology_study BEGIN
        UPDATE radiology_studytally SET studies = studies - 1
        WHERE state = OLD.state AND body_region = OLD.body_region;
    END
    """,
    """
    CREATE TRIGGER study_tally_update AFTER UPDATE OF state, body_region ON radiology_study
    WHEN OLD.state IS NOT NEW.state OR OLD.body_region IS NOT NEW.body_region BEGIN
        UPDATE radiology_studytally SET studies = studies - 1
        WHERE state = OLD.state AND body_region = OLD.body_region;
        INSERT OR IGNORE INTO radiology_studytally (state, body_region, studies)
        VALUES (NEW.state, NEW.body_region, 0);
        UPDATE radiology_studytally SET studies = studies + 1
        WHERE state = NEW.state AND body_region = NEW.body_region;
    END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER study_tally_update",
    "DROP TRIGGER study_tally_delete",
    "DROP TRIGGER study_tally_insert",
]
SEED = """
    INSERT INTO radiology_studytally (state, body_region, studies)
    SELECT state, body_region, COUNT(*) FROM radiology_study GROUP BY state, body_region
"""


class Migration(migrations.Migration):
    dependencies = [("radiology", "0017_audit_tallies")]

    operations = [
        migrations.CreateModel(
            name="StudyTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("state", models.CharField(max_length=16)),
                ("body_region", models.CharField(max_length=16)),
                ("studies", models.IntegerField(default=0)),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("state", "body_region"), name="study_tally_unique")],
            },
        ),
        migrations.RunSQL(SEED, reverse_sql=migrations.RunSQL.noop),
        migrations.RunPython(
            run_per_vendor({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            run_per_vendor({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
