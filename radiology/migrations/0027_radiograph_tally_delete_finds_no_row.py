"""On SQLite, deleting a radiograph no longer makes a radiograph tally row (migration 0022's trigger made one
at 0 and took 1 off it). `flush` deletes every table row by row in no fixed order: when it emptied the tally
before the radiographs, the tally came back at minus the number of radiographs and stayed that far below the
count for good, and the API's radiograph list, paged by that count, failed on a negative one. A deletion now
only updates a row that is there, as the study tally's trigger (0018) already did. PostgreSQL flushes with
TRUNCATE, which fires no row triggers: nothing changes there."""

import importlib

from django.db import migrations

from radiology.migrations._per_vendor import run_per_vendor

UPDATE_ONLY = """
    CREATE TRIGGER radiograph_tally_delete AFTER DELETE ON radiology_radiograph BEGIN
        UPDATE radiology_radiographtally SET radiographs = radiographs - 1 WHERE id = 1;
    END
"""
# 0022's delete trigger (its SQLITE: the insert trigger, then the delete trigger), made again on the way back.
INSERT_OR_IGNORE_THEN_UPDATE = importlib.import_module("radiology.migrations.0022_radiograph_tally").SQLITE[1]
DROP = "DROP TRIGGER IF EXISTS radiograph_tally_delete"


class Migration(migrations.Migration):
    dependencies = [("radiology", "0026_study_read_without_model")]

    operations = [
        migrations.RunPython(
            run_per_vendor({"sqlite": [DROP, UPDATE_ONLY]}),
            run_per_vendor({"sqlite": [DROP, INSERT_OR_IGNORE_THEN_UPDATE]}),
        ),
    ]
