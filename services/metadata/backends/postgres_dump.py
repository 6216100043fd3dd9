"""A SQL dump of one PostgreSQL schema, built from the catalogs, that Import can apply.

It covers what applications keep in a Strata database: sequences, tables (defaults,
identity and generated columns, NOT NULL), rows, primary/unique/check/exclusion and
foreign-key constraints, indexes, sequence positions and views. Functions, triggers,
types and policies are not dumped. Names are written unqualified so the dump can be
imported into any database. Rows are rendered by the server with quote_nullable(),
so every type keeps its exact text form (floats included, PostgreSQL 12+).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql

ROWS_PER_FETCH = 2000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _all(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query.encode(), params or None)
    return await cur.fetchall()


async def dump_statements(conn: psycopg.AsyncConnection[Any], schema: str, *, schema_only: bool) -> AsyncIterator[str]:
    yield "BEGIN;\n"
    sequences = await _all(
        conn,
        """SELECT c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcycle
             FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i')
            ORDER BY c.oid""",
        schema,
    )
    for name, kind, increment, low, high, start, cycle in sequences:
        yield (
            f"CREATE SEQUENCE {_q(name)} AS {kind} INCREMENT BY {increment} MINVALUE {low} MAXVALUE {high} "
            f"START WITH {start}{' CYCLE' if cycle else ''};\n"
        )
    tables = await _all(
        conn,
        """SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.oid""",
        schema,
    )
    for oid, table in tables:
        columns = await _all(
            conn,
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
                 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
            oid,
        )
        parts = []
        for name, kind, not_null, default, identity, generated in columns:
            part = f"{_q(name)} {kind}"
            if generated == "s":
                part += f" GENERATED ALWAYS AS ({default}) STORED"
            elif identity:
                part += f" GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY"
            elif default is not None:
                part += f" DEFAULT {default}"
            if not_null:
                part += " NOT NULL"
            parts.append(part)
        yield f"CREATE TABLE {_q(table)} ({', '.join(parts)});\n"
        if schema_only:
            continue
        insertable = [c[0] for c in columns if c[5] != "s"]
        if not insertable:
            continue
        overriding = " OVERRIDING SYSTEM VALUE" if any(c[4] == "a" for c in columns) else ""
        prefix = f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in insertable)}){overriding} VALUES ("
        rendered = sql.SQL(" || ',' || ").join(
            sql.SQL("quote_nullable({})").format(sql.Identifier(c)) for c in insertable
        )
        select = sql.SQL("SELECT {} FROM {}").format(rendered, sql.Identifier(table))
        async with conn.cursor(name=f"strata_dump_{oid}") as cursor:
            await cursor.execute(select)
            while batch := await cursor.fetchmany(ROWS_PER_FETCH):
                yield "".join(f"{prefix}{values});\n" for (values,) in batch)
    foreign_keys: list[str] = []
    for oid, table in tables:
        for name, definition, kind in await _all(
            conn,
            """SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint
                WHERE conrelid = %s AND contype IN ('p', 'u', 'c', 'x', 'f') ORDER BY oid""",
            oid,
        ):
            statement = f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition};\n"
            if kind == "f":
                foreign_keys.append(statement)
            else:
                yield statement
    for statement in foreign_keys:
        yield statement
    for (definition,) in await _all(
        conn,
        """SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND NOT EXISTS (
                  SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
            ORDER BY i.indexrelid""",
        schema,
    ):
        yield _unqualified(definition, schema) + ";\n"
    if not schema_only:
        for (name,) in await _all(
            conn,
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relkind = 'S' ORDER BY c.oid""",
            schema,
        ):
            cur = await conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(name)))
            row = await cur.fetchone()
            if row is not None:
                yield f"SELECT setval('{_q(name)}', {row[0]}, {'true' if row[1] else 'false'});\n"
    for name, table, column in await _all(
        conn,
        """SELECT s.relname, t.relname, a.attname FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_class t ON t.oid = d.refobjid
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
             JOIN pg_namespace n ON n.oid = s.relnamespace
            WHERE n.nspname = %s AND d.deptype = 'a' ORDER BY s.oid""",
        schema,
    ):
        yield f"ALTER SEQUENCE {_q(name)} OWNED BY {_q(table)}.{_q(column)};\n"
    for name, definition in await _all(
        conn,
        """SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'v' ORDER BY c.oid""",
        schema,
    ):
        yield f"CREATE VIEW {_q(name)} AS {definition.rstrip().rstrip(';')};\n"
    yield "COMMIT;\n"


def _unqualified(definition: str, schema: str) -> str:
    for form in (f"{_q(schema)}.", f"{schema}."):
        definition = definition.replace(f" ON {form}", " ON ").replace(f" ONLY {form}", " ONLY ")
    return definition
