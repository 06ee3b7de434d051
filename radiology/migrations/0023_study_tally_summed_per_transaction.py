"""The study tally's triggers (migration 0018) sum a transaction's changes first and update each counter row
once, at commit.

One UPDATE per study changed made a bulk load quadratic: within one transaction every update of a counter
row walks all the earlier versions of that row the transaction made, and a 333,334-study COPY (one
transaction in generate_scale_data) updates the same few dozen rows hundreds of thousands of times. Now an
immediate trigger adds each change to a transaction-local setting (a JSON map of "state|body_region" to a
count; rolled back with its savepoint), and the deferred triggers of 0018, at commit, write the map's
non-zero counts in key order (so two writers take the counter rows in one order) and clear it; the other
deferred firings find it empty. Production transactions (an upload, a review) change one study: the same
work as before. SQLite keeps 0018's immediate triggers (one writer at a time, no deferred triggers).
"""

from importlib import import_module

from django.db import migrations

from radiology.migrations._per_vendor import run_per_vendor

SUM = """
    CREATE FUNCTION radiology_study_delta() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta jsonb := COALESCE(NULLIF(current_setting('radiology.study_delta', true), ''), '{}')::jsonb;
        key text;
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            key := OLD.state || '|' || OLD.body_region;
            delta := jsonb_set(delta, ARRAY[key], to_jsonb(COALESCE((delta ->> key)::bigint, 0) - 1));
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            key := NEW.state || '|' || NEW.body_region;
            delta := jsonb_set(delta, ARRAY[key], to_jsonb(COALESCE((delta ->> key)::bigint, 0) + 1));
        END IF;
        PERFORM set_config('radiology.study_delta', delta::text, true);
        RETURN NULL;
    END
    $$
"""
WRITE = """
    CREATE OR REPLACE FUNCTION radiology_study_tally() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        delta jsonb := COALESCE(NULLIF(current_setting('radiology.study_delta', true), ''), '{}')::jsonb;
        change record;
    BEGIN
        IF delta = '{}'::jsonb THEN
            RETURN NULL;  -- written by an earlier firing at this commit
        END IF;
        FOR change IN SELECT key, value::bigint AS n FROM jsonb_each_text(delta) ORDER BY key LOOP
            IF change.n <> 0 THEN
                INSERT INTO radiology_studytally (state, body_region, studies)
                VALUES (split_part(change.key, '|', 1), split_part(change.key, '|', 2), change.n)
                ON CONFLICT (state, body_region)
                DO UPDATE SET studies = radiology_studytally.studies + EXCLUDED.studies;
            END IF;
        END LOOP;
        PERFORM set_config('radiology.study_delta', '{}', true);
        RETURN NULL;
    END
    $$
"""
POSTGRESQL = [
    SUM,
    WRITE,
    """
    CREATE TRIGGER study_tally_delta_insert_delete AFTER INSERT OR DELETE ON radiology_study
    FOR EACH ROW EXECUTE FUNCTION radiology_study_delta()
    """,
    """
    CREATE TRIGGER study_tally_delta_update AFTER UPDATE OF state, body_region ON radiology_study
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.body_region IS DISTINCT FROM NEW.body_region)
    EXECUTE FUNCTION radiology_study_delta()
    """,
]
# 0018's function, one UPDATE per row, for going back.
PER_ROW = (
    import_module("radiology.migrations.0018_study_tally")
    .POSTGRESQL[0]
    .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
)
POSTGRESQL_REVERSE = [
    "DROP TRIGGER study_tally_delta_update ON radiology_study",
    "DROP TRIGGER study_tally_delta_insert_delete ON radiology_study",
    PER_ROW,
    "DROP FUNCTION radiology_study_delta()",
]


class Migration(migrations.Migration):
    dependencies = [("radiology", "0022_radiograph_tally")]

    operations = [
        migrations.RunPython(
            run_per_vendor({"postgresql": POSTGRESQL}), run_per_vendor({"postgresql": POSTGRESQL_REVERSE})
        ),
    ]
