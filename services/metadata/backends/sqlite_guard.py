"""What a caller's SQL may do on a SQLite connection, enforced by sqlite3's authorizer.

The authorizer runs when a statement is prepared, so a forbidden statement fails
before it touches anything. Read connections also refuse every write, which is how
a read-only Query is enforced and how a statement is routed to the one writer.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass

# Introspection pragmas a caller may run with any argument (they never write).
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "function_list",
        "collation_list",
        "compile_options",
        "pragma_list",
        "module_list",
    }
)
# Pragmas a caller may read but never set: setting them would change the shared connection.
_STATUS_PRAGMAS = frozenset(
    {
        "user_version",
        "application_id",
        "data_version",
        "page_count",
        "page_size",
        "freelist_count",
        "schema_version",
        "encoding",
        "foreign_keys",
        "journal_mode",
        "synchronous",
    }
)
_WRITES = frozenset(
    {
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)
# Temporary objects would outlive the call on a pooled connection and leak between callers.
_TEMPORARY = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
        sqlite3.SQLITE_DROP_TEMP_INDEX,
        sqlite3.SQLITE_DROP_TEMP_TABLE,
        sqlite3.SQLITE_DROP_TEMP_TRIGGER,
        sqlite3.SQLITE_DROP_TEMP_VIEW,
    }
)
_FORBIDDEN_FUNCTIONS = frozenset({"load_extension"})

_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})


def _schema_read(action: int, table: str | None) -> bool:
    # Table-valued pragmas (pragma_table_info...) parse the schema, which SQLite authorizes as an
    # UPDATE of sqlite_master; a real UPDATE of it fails anyway unless writable_schema is on.
    return action == sqlite3.SQLITE_UPDATE and table in _SCHEMA_TABLES


# How many SQLite VM steps between time-limit checks (a check costs ~50 ns).
PROGRESS_STEPS = 1000


@dataclass
class Guard:
    """Per-connection state the authorizer and progress handler consult."""

    allow_writes: bool
    # True only while the service itself runs BEGIN/COMMIT/PRAGMA on the connection.
    trusted: bool = False
    deadline: float = math.inf
    # Why the last statement was denied: "WRITE" or a description of the forbidden thing.
    denied: str | None = None

    def authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
        if self.trusted:
            return sqlite3.SQLITE_OK
        reason = self._forbidden(action, arg1, arg2)
        if reason is None and action in _WRITES and not self.allow_writes and not _schema_read(action, arg1):
            reason = "WRITE"
        if reason is None:
            return sqlite3.SQLITE_OK
        self.denied = reason
        return sqlite3.SQLITE_DENY

    @staticmethod
    def _forbidden(action: int, arg1: str | None, arg2: str | None) -> str | None:
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return "ATTACH and DETACH are not allowed: each database is one file"
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return "transaction control is not allowed: each Query or Batch already runs as one transaction"
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _FORBIDDEN_FUNCTIONS:
            return f"the function {arg2}() is not allowed"
        if action in _TEMPORARY:
            return "temporary tables, views, indexes and triggers are not allowed"
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _INTROSPECTION_PRAGMAS or (name in _STATUS_PRAGMAS and arg2 is None):
                return None
            return f"PRAGMA {name}{'' if arg2 is None else '=' + arg2} is not allowed"
        return None

    def progress(self) -> int:
        # Non-zero interrupts the running statement (SQLITE_INTERRUPT).
        return 1 if time.monotonic() > self.deadline else 0

    def install(self, conn: sqlite3.Connection) -> None:
        conn.set_authorizer(self.authorize)
        conn.set_progress_handler(self.progress, PROGRESS_STEPS)

    def trusted_execute(self, conn: sqlite3.Connection, sql: str) -> None:
        self.trusted = True
        try:
            conn.execute(sql)
        finally:
            self.trusted = False
