"""The PostgreSQL metadata schema and its versioned migrations, applied by the gateway on start.

`migrate(conn)` brings a database to the newest schema: under a session advisory lock (several
gateways starting at once apply each migration once), it reads the versions already applied from
`s3_schema_migrations` and runs the missing ones in order, each in its own transaction together
with its row in that table. A migration is never edited once released: a change is a new entry.

The schema (docs/metadata-postgres.md):
- `s3_kv(sublevel, key, value)`: one row per key of the store layer's key layout
  (docs/metadata-keys.md): `sublevel` is the sublevel path joined with '#', `key` and `value` the
  UTF-8 bytes. `bytea` keys sort by bytes, the order RocksDB gives the dmd (version keys hold a
  NUL byte, which `text` cannot), so range reads and the listings' skip-ahead are index scans of
  the primary key;
- `s3_instance(id)`: the instance UUID (`getUUID`), fixed at the first migration.
"""
from __future__ import annotations

from typing import Any

# Held (session level) while migrating: one migrating gateway at a time.
MIGRATION_LOCK_ID = 0x5333_4D49_4752   # "S3MIGR"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "key-value rows of the store layer, instance id", [
        """CREATE TABLE s3_kv (
               sublevel text COLLATE "C" NOT NULL,
               key bytea NOT NULL,
               value bytea NOT NULL,
               PRIMARY KEY (sublevel, key)
           )""",
        """CREATE TABLE s3_instance (
               singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
               id text NOT NULL
           )""",
        "INSERT INTO s3_instance (id) VALUES (gen_random_uuid()::text)",
    ]),
    (2, "locked writes as server-side functions: one round trip each", [
        # A conditional write: lock the key, check (mode 0 none, 1 ifAbsent, 2 ifMatch), write or delete
        # (p_value NULL); (done, the value before). Called outside an explicit transaction, the
        # statement is the transaction: the advisory lock is held until it commits.
        """CREATE FUNCTION s3_write_if(p_lock bigint, p_sub text, p_key bytea, p_value bytea, p_mode int,
                                       p_match bytea, OUT done boolean, OUT previous bytea)
           LANGUAGE plpgsql AS $$
           BEGIN
               PERFORM pg_advisory_xact_lock(p_lock);
               SELECT kv.value INTO previous FROM s3_kv kv WHERE kv.sublevel = p_sub AND kv.key = p_key;
               IF (p_mode = 1 AND previous IS NOT NULL) OR (p_mode = 2 AND previous IS DISTINCT FROM p_match) THEN
                   done := false;
                   RETURN;
               END IF;
               IF p_value IS NULL THEN
                   DELETE FROM s3_kv kv WHERE kv.sublevel = p_sub AND kv.key = p_key;
               ELSE
                   INSERT INTO s3_kv (sublevel, key, value) VALUES (p_sub, p_key, p_value)
                   ON CONFLICT (sublevel, key) DO UPDATE SET value = EXCLUDED.value;
               END IF;
               done := true;
           END $$""",
        # A new version and its master: refused (false) when a version key at or before ours exists
        # (same id made by another gateway, or a newer one committed first): the caller makes a new id.
        """CREATE FUNCTION s3_put_versioned(p_lock bigint, p_sub text, p_master bytea, p_version_key bytea,
                                            p_value bytea) RETURNS boolean
           LANGUAGE plpgsql AS $$
           BEGIN
               PERFORM pg_advisory_xact_lock(p_lock);
               IF EXISTS (SELECT 1 FROM s3_kv kv WHERE kv.sublevel = p_sub
                          AND kv.key > p_master || '\\x00'::bytea AND kv.key <= p_version_key) THEN
                   RETURN false;
               END IF;
               INSERT INTO s3_kv (sublevel, key, value) VALUES (p_sub, p_version_key, p_value);
               INSERT INTO s3_kv (sublevel, key, value) VALUES (p_sub, p_master, p_value)
               ON CONFLICT (sublevel, key) DO UPDATE SET value = EXCLUDED.value;
               RETURN true;
           END $$""",
    ]),
]

LATEST_VERSION = MIGRATIONS[-1][0]


async def applied_versions(conn: Any) -> set[int]:
    rows = await conn.fetch("SELECT version FROM s3_schema_migrations")
    return {row["version"] for row in rows}


async def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations; the versions applied now (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute("""CREATE TABLE IF NOT EXISTS s3_schema_migrations (
                                  version integer PRIMARY KEY,
                                  description text NOT NULL,
                                  applied_at timestamptz NOT NULL DEFAULT now())""")
        done = await applied_versions(conn)
        newer = [v for v in done if v > LATEST_VERSION]
        if newer:
            raise RuntimeError(f"the metadata database has schema version {max(newer)}, newer than this "
                               f"gateway's {LATEST_VERSION}: upgrade the gateway")
        applied: list[int] = []
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO s3_schema_migrations (version, description) VALUES ($1, $2)",
                                   version, description)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
