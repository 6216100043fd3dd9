"""Congruence: portable SQL gives the same columns, rows, changes and error codes on every backend.

Each scenario runs step by step in a fresh database on our SQLite server and our
PostgreSQL server; the two transcripts must be equal. (Against an external address
this module is skipped: it compares our two backends with each other.)
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc
from tests.contract.metadata.client import rows, v
from tests.contract.metadata.conftest import CONFORMANCE_ADDR, unique_name

INT64_MAX = 2**63 - 1

Step = tuple[str, tuple[Any, ...]] | str

SCENARIOS: dict[str, list[Step]] = {
    "crud": [
        "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION, raw BYTEA)",
        ("INSERT INTO t (id, name, score, raw) VALUES (?, ?, ?, ?)", (1, "one", 1.25, b"\x01")),
        ("INSERT INTO t (id, name, score, raw) VALUES (?, ?, ?, ?)", (INT64_MAX, "max", -0.5, None)),
        ("INSERT INTO t (id, name) VALUES (?, ?), (?, ?)", (3, "three", 4, "four")),
        ("UPDATE t SET score = score * 2 WHERE id IN (?, ?)", (1, INT64_MAX)),
        ("DELETE FROM t WHERE id = ?", (4,)),
        "SELECT id, name, score, raw FROM t ORDER BY id",
        ("SELECT count(*) AS n FROM t WHERE score IS NULL OR score < ?", (0.0,)),
    ],
    "errors": [
        "CREATE TABLE p (id BIGINT PRIMARY KEY, email TEXT UNIQUE, n BIGINT CHECK (n > 0))",
        "CREATE TABLE c (id BIGINT PRIMARY KEY, p_id BIGINT NOT NULL REFERENCES p (id))",
        "INSERT INTO p (id, email, n) VALUES (1, 'a@x', 1)",
        "INSERT INTO p (id, email, n) VALUES (2, 'a@x', 1)",
        "INSERT INTO p (id, email, n) VALUES (1, 'b@x', 1)",
        "INSERT INTO p (id, email, n) VALUES (3, 'c@x', 0)",
        "INSERT INTO c (id, p_id) VALUES (1, 42)",
        "INSERT INTO c (id, p_id) VALUES (1, NULL)",
        "SELECT nope FROM p",
        "SELEKT 1",
        ("SELECT ? + ?", (1,)),
        "SELECT id, email, n FROM p",
    ],
    "queries": [
        "CREATE TABLE s (id BIGINT PRIMARY KEY, grp TEXT, v BIGINT)",
        *[("INSERT INTO s (id, grp, v) VALUES (?, ?, ?)", (i, "ab"[i % 2], i * 10)) for i in range(1, 11)],
        "SELECT grp, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi FROM s GROUP BY grp ORDER BY grp",
        "SELECT grp, CAST(avg(v) AS DOUBLE PRECISION) AS mean FROM s GROUP BY grp HAVING count(*) > 1 ORDER BY grp",
        ("SELECT id FROM s WHERE id IN (?, ?, ?, ?) ORDER BY id DESC", (2, 4, 6, 99)),
        "SELECT id, v FROM s ORDER BY v DESC LIMIT 3 OFFSET 2",
        "SELECT a.id AS a_id, b.id AS b_id FROM s a JOIN s b ON b.id = a.id + 5 WHERE a.grp = 'a' ORDER BY a.id",
        "SELECT id, row_number() OVER (PARTITION BY grp ORDER BY id DESC) AS rn FROM s ORDER BY id",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) SELECT sum(x) AS total FROM n",
        "SELECT CASE WHEN v > 50 THEN 'big' ELSE 'small' END AS size, count(*) AS n FROM s GROUP BY 1 ORDER BY 1",
        "SELECT upper(grp) || '-' || lower('X') || length('four') AS a, substr('strata', 2, 3) AS b, 7 / 2 AS c, "
        "7 % 3 AS d FROM s LIMIT 1",
        "SELECT COALESCE(NULL, 'x') AS a, NULLIF(1, 1) AS b, abs(-5) AS c, 1 < 2 AS d, 'a' LIKE 'a%' AS e",
        ("SELECT ? || 'x' AS a, ? * 2 AS b, ? AS c", ("text?", 2**61, None)),
    ],
    "upsert_and_returning": [
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
        ("INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", ("a", 1)),
        ("INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", ("a", 2)),
        ("INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = kv.v + excluded.v", ("a", 5)),
        ("INSERT INTO kv (k, v) VALUES (?, ?), (?, ?) RETURNING k, v", ("b", 1, "c", 2)),
        ("UPDATE kv SET v = v + 1 WHERE k <> ? RETURNING k", ("a",)),
        "DELETE FROM kv WHERE v > 2 RETURNING k, v",
        "SELECT k, v FROM kv ORDER BY k",
    ],
    "nulls_and_ordering": [
        "CREATE TABLE o (id BIGINT PRIMARY KEY, x BIGINT)",
        "INSERT INTO o (id, x) VALUES (1, 3), (2, NULL), (3, 1)",
        "SELECT id FROM o ORDER BY x NULLS FIRST",
        "SELECT id FROM o ORDER BY x DESC NULLS LAST",
        "SELECT count(x) AS a, count(*) AS b, sum(x) AS c FROM o",
        "SELECT id FROM o WHERE x IS NOT NULL ORDER BY id",
    ],
}


def _outcome(stub: metadata_pb2_grpc.MetadataServiceStub, database: str, step: Step) -> tuple[Any, ...]:
    sql, params = (step, ()) if isinstance(step, str) else step
    try:
        result = stub.Query(pb.QueryRequest(database=database, sql=sql, params=[v(p) for p in params])).result
    except grpc.RpcError as exc:
        return ("error", exc.code().name)
    # RETURNING row order is unspecified: compare returned rows as a multiset there.
    got = rows(result)
    return ("ok", list(result.columns), sorted(got, key=repr) if "RETURNING" in sql else got, result.meta.changes)


def _transcript(address: str, steps: list[Step]) -> list[tuple[Any, ...]]:
    with grpc.insecure_channel(address) as channel:
        stub = metadata_pb2_grpc.MetadataServiceStub(channel)
        name = unique_name("congruence")
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
        try:
            return [_outcome(stub, name, step) for step in steps]
        finally:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


@pytest.mark.skipif(bool(CONFORMANCE_ADDR), reason="compares our own backends with each other")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_backends_agree(scenario: str, sqlite_address: str, postgres_address: str) -> None:
    steps = SCENARIOS[scenario]
    on_sqlite = _transcript(sqlite_address, steps)
    on_postgres = _transcript(postgres_address, steps)
    for step, a, b in zip(steps, on_sqlite, on_postgres, strict=True):
        assert a == b, f"backends disagree on {step!r}:\n  sqlite:   {a}\n  postgres: {b}"
    # A scenario that only produced errors would prove nothing.
    assert any(outcome[0] == "ok" and outcome[2] for outcome in on_sqlite)
