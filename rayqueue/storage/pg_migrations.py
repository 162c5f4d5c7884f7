"""The PostgreSQL journal's table layout, as numbered migrations shipped in the package.

Each journal (one queue shard) is a schema of its own. ``migrations`` in it records the
migrations applied; an opener applies the missing ones in one transaction, and refuses a
schema with a migration newer than it knows (written by a newer rayqueue). ``{s}`` stands
for the schema's quoted name. Never edit a shipped migration: add the next one.
"""

from __future__ import annotations

#: (version, name, statements), in order; the journal's schema version is the last one's.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "tasks, schedules, identity and owner epoch", (
        "CREATE TABLE {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # The same columns as the SQLite journal's, filled by the same codec.
        "CREATE TABLE {s}.tasks (id TEXT PRIMARY KEY, task_name TEXT NOT NULL,"
        " state TEXT NOT NULL, payload TEXT NOT NULL, record TEXT NOT NULL)",
        "CREATE TABLE {s}.schedules (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
        # One row: the owner's epoch (bumped by every opener; a commit whose epoch is no
        # longer current is refused) and the number of the last committed batch.
        "CREATE TABLE {s}.queue_owner (one INT PRIMARY KEY CHECK (one = 1),"
        " epoch BIGINT NOT NULL, seq BIGINT NOT NULL, owner TEXT NOT NULL,"
        " since TIMESTAMPTZ NOT NULL)",
        "INSERT INTO {s}.queue_owner VALUES (1, 0, 0, '', now())",
    )),
)

#: The schema version this rayqueue writes and reads.
PG_SCHEMA_VERSION = MIGRATIONS[-1][0]
