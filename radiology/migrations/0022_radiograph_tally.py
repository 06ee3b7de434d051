"""How many radiographs there are (radiology.tallies.RadiographTally, one row), kept by triggers on
radiology_radiograph and filled in from the radiographs already there: the API's unfiltered radiograph list
reads one row for its count instead of counting 1,000,000 index entries (~50 ms a page at that scale).

Only inserts and deletes are counted, never a change of status, so the worker's claim and store do not
touch the row. As for the study tally (migration 0018), the PostgreSQL triggers are deferred to commit, when
an upload or a deletion already holds the audit chain's head row: writers take the counters in one order.
"""

from django.db import migrations, models

from radiology.migrations._per_vendor import run_per_vendor

POSTGRESQL = [
    # Each inserted or deleted row adds +1 or -1 to a transaction-local setting (rolled back with its
    # savepoint), and the first deferred trigger at commit writes the sum to the counter row, once. One
    # UPDATE per row would update the same row a million times in a bulk load's transaction, and each
    # update walks every earlier version of that row the transaction made: quadratic (a 1,000,000-radiograph
    # COPY did not finish its COMMIT in 16 minutes).
    """
    CREATE FUNCTION radiology_radiograph_delta() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM set_config(
            'radiology.radiograph_delta',
            (COALESCE(NULLIF(current_setting('radiology.radiograph_delta', true), ''), '0')::bigint
             + CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END)::text,
            true
        );
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION radiology_radiograph_tally() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta bigint := COALESCE(NULLIF(current_setting('radiology.radiograph_delta', true), ''), '0')::bigint;
    BEGIN
        IF delta <> 0 THEN
            -- An upsert: a flushed database (TRUNCATE of every table) starts again from no row.
            INSERT INTO radiology_radiographtally (id, radiographs) VALUES (1, delta)
            ON CONFLICT (id) DO UPDATE SET radiographs = radiology_radiographtally.radiographs + delta;
            PERFORM set_config('radiology.radiograph_delta', '0', true);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER radiograph_tally_delta AFTER INSERT OR DELETE ON radiology_radiograph
    FOR EACH ROW EXECUTE FUNCTION radiology_radiograph_delta()
    """,
    """
    CREATE CONSTRAINT TRIGGER radiograph_tally_insert_delete AFTER INSERT OR DELETE ON radiology_radiograph
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION radiology_radiograph_tally()
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER radiograph_tally_insert_delete ON radiology_radiograph",
    "DROP TRIGGER radiograph_tally_delta ON radiology_radiograph",
    "DROP FUNCTION radiology_radiograph_tally()",
    "DROP FUNCTION radiology_radiograph_delta()",
]
SQLITE = [
    """
    CREATE TRIGGER radiograph_tally_insert AFTER INSERT ON radiology_radiograph BEGIN
        INSERT OR IGNORE INTO radiology_radiographtally (id, radiographs) VALUES (1, 0);
        UPDATE radiology_radiographtally SET radiographs = radiographs + 1 WHERE id = 1;
    END
    """,
    """
    CREATE TRIGGER radiograph_tally_delete AFTER DELETE ON radiology_radiograph BEGIN
        INSERT OR IGNORE INTO radiology_radiographtally (id, radiographs) VALUES (1, 0);
        UPDATE radiology_radiographtally SET radiographs = radiographs - 1 WHERE id = 1;
    END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER radiograph_tally_delete",
    "DROP TRIGGER radiograph_tally_insert",
]
SEED = "INSERT INTO radiology_radiographtally (id, radiographs) SELECT 1, COUNT(*) FROM radiology_radiograph"


class Migration(migrations.Migration):
    dependencies = [("radiology", "0021_batch_idempotency_key")]

    operations = [
        migrations.CreateModel(
            name="RadiographTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("radiographs", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(SEED, reverse_sql=migrations.RunSQL.noop),
        migrations.RunPython(
            run_per_vendor({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            run_per_vendor({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
