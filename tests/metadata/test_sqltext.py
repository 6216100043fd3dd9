"""The SQL scanner: placeholders and statement boundaries never found inside quotes or comments."""

from __future__ import annotations

import pytest

from services.metadata.sqltext import PostgresText, is_blank, leading_keyword
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    ("sql", "query", "placeholders"),
    [
        ("SELECT ?", "SELECT %s", 1),
        ("SELECT '?', ?", "SELECT '?', %s", 1),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s", 1),
        ('SELECT "a?""b" FROM t WHERE x = ?', 'SELECT "a?""b" FROM t WHERE x = %s', 1),
        ("SELECT 1 -- why?\n, ?", "SELECT 1 -- why?\n, %s", 1),
        ("SELECT /* a /* nested ? */ still ? */ ?", "SELECT /* a /* nested ? */ still ? */ %s", 1),
        ("SELECT $$ ? $$, $tag$ '? $$ $tag$, ?", "SELECT $$ ? $$, $tag$ '? $$ $tag$, %s", 1),
        ("SELECT E'\\' ?', ?", "SELECT E'\\' ?', %s", 1),
        ("SELECT 'x' || ? || '%'", "SELECT 'x' || %s || '%%'", 1),
        ("SELECT 5 % 3, ?", "SELECT 5 %% 3, %s", 1),
        ("SELECT a$1 FROM t WHERE b = ?", "SELECT a$1 FROM t WHERE b = %s", 1),
        ("SELECT 1", "SELECT 1", 0),
    ],
)
def test_placeholders_outside_quotes_become_server_parameters(sql: str, query: str, placeholders: int) -> None:
    text = PostgresText(sql)
    assert text.query == query
    assert text.placeholders == placeholders
    assert len(text.statements) == 1


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("SELECT 1; SELECT 2", 2),
        ("SELECT ';'; ", 1),
        ("SELECT 1; -- trailing\n", 1),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2; $$ LANGUAGE sql; SELECT f()", 2),
        ('SELECT ";" FROM t', 1),
    ],
)
def test_statement_boundaries(sql: str, count: int) -> None:
    assert len(PostgresText(sql).statements) == count


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT $$ open", "SELECT /* open"])
def test_unterminated_text_is_invalid_argument(sql: str) -> None:
    with pytest.raises(InvalidArgument):
        PostgresText(sql)


def test_leading_keyword_and_blank() -> None:
    assert leading_keyword("  -- c\n /* x */ (select 1)") == "SELECT"
    assert leading_keyword("") == ""
    assert is_blank(" ; -- x\n /* y */ ;")
    assert not is_blank("(")


@pytest.mark.parametrize(
    ("sql", "returning"),
    [
        ("INSERT INTO t (id) VALUES (?) RETURNING id", True),
        ("insert into t values (1)\nreturning *", True),
        ("INSERT INTO t (note) VALUES ('returning')", False),
        ('INSERT INTO t ("returning") VALUES (1)', False),
        ("INSERT INTO t (id) VALUES (1) -- returning id", False),
        ("INSERT INTO returning_log (id) VALUES (1)", False),
    ],
)
def test_postgres_text_sees_a_returning_clause_only_outside_quotes(sql: str, returning: bool) -> None:
    assert PostgresText(sql).returning is returning
