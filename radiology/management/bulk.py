"""Write many model rows fast, for the scale-data generator: COPY on PostgreSQL, executemany elsewhere.

Rows are model instances built in memory with their primary keys already set (ids are reserved up
front), so rows that point at each other (a radiograph's current prediction, a prediction's radiograph)
can be written in any order inside one transaction: PostgreSQL checks Django's foreign keys at commit.
Every concrete field is written as Django would write it (``get_db_prep_save``), so a field added to a
model later is written too, with its default.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS, connection, connections, models

# Field types whose Python values the database driver takes as they are.
PLAIN_TYPES = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "DateField",
    "FloatField",
    "ForeignKey",
    "IntegerField",
    "OneToOneField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}


class BulkWriter:
    """Reserve ids and write rows of several models; counts what it wrote per model."""

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"
        self.written: dict[str, int] = {}

    def reserve(self, model: type[models.Model], count: int) -> int:
        """The first of ``count`` consecutive free primary keys of ``model`` (the rest follow it)."""
        table = model._meta.db_table
        with connection.cursor() as cursor:
            if self.postgres:
                # One statement: take the next value and move the sequence past the whole block.
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                    "nextval(pg_get_serial_sequence(%s, 'id')) + %s - 1)",
                    [table, table, count],
                )
                return int(cursor.fetchone()[0]) - count + 1
            cursor.execute(f'SELECT COALESCE(MAX(id), 0) FROM "{table}"')  # noqa: S608 - model's own table
            return int(cursor.fetchone()[0]) + 1  # one writer at a time: SQLite locks the database

    def write(self, model: type[models.Model], rows: Iterable[models.Model]) -> None:
        db = connections[DEFAULT_DB_ALIAS]  # the connection itself: the proxy costs a lookup per attribute
        fields = list(model._meta.concrete_fields)
        # Plain values go as they are (the driver adapts them); others (JSON, files) as Django prepares them.
        plain_types = PLAIN_TYPES | ({"DateTimeField"} if self.postgres else set())  # aware datetimes
        plain = [f.get_internal_type() in plain_types for f in fields]
        table = model._meta.db_table
        columns = ", ".join(db.ops.quote_name(str(f.column)) for f in fields)
        prepared = list(zip(fields, plain, strict=True))
        values = (
            [
                getattr(row, f.attname) if is_plain else f.get_db_prep_save(getattr(row, f.attname), db)
                for f, is_plain in prepared
            ]
            for row in rows
        )
        count = 0
        with db.cursor() as cursor:
            if self.postgres:
                raw = cursor.cursor  # the psycopg cursor under Django's wrapper
                with raw.copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
                    for value in values:
                        copy.write_row(value)
                        count += 1
            else:
                batch = list(values)
                marks = ", ".join(["%s"] * len(fields))
                cursor.executemany(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', batch)  # noqa: S608
                count = len(batch)
        self.written[model.__name__] = self.written.get(model.__name__, 0) + count
