"""Reading SQL text without an engine: leading keywords and PostgreSQL placeholder translation.

The scanner knows just enough lexical structure to never mistake a `?`, `%` or `;`
inside a string, quoted identifier, dollar-quoted body or comment for syntax.
"""

from __future__ import annotations

import functools
import re

from services.runtime.errors import InvalidArgument

# Transaction control would break the one-transaction-per-call promise, so no caller may send it.
TRANSACTION_KEYWORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "START", "ABORT"})

_WORD = re.compile(r"[A-Za-z_]+")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_RETURNING = re.compile(r"(?<![\w$])returning(?![\w$])", re.IGNORECASE)


def _skip_space_and_comments(sql: str, pos: int, *, parens: bool = False) -> int:
    length = len(sql)
    while pos < length:
        char = sql[pos]
        if char.isspace() or (parens and char == "("):
            pos += 1
        elif sql.startswith("--", pos):
            end = sql.find("\n", pos)
            pos = length if end < 0 else end + 1
        elif sql.startswith("/*", pos):
            end = sql.find("*/", pos + 2)
            pos = length if end < 0 else end + 2
        else:
            break
    return pos


@functools.lru_cache(maxsize=4096)
def leading_keyword(sql: str) -> str:
    """The statement's first keyword in upper case ('' when there is none)."""
    match = _WORD.match(sql, _skip_space_and_comments(sql, 0, parens=True))
    return match.group(0).upper() if match else ""


def without_leading_comments(sql: str) -> str:
    return sql[_skip_space_and_comments(sql, 0) :]


def reject_transaction_control(sql: str) -> None:
    keyword = leading_keyword(sql)
    if keyword in TRANSACTION_KEYWORDS:
        raise InvalidArgument(
            f"{keyword} is not allowed: each Query or Batch already runs as one transaction",
            reason="TRANSACTION_CONTROL",
        )


class PostgresText:
    """One pass over PostgreSQL text: statement boundaries and `?` placeholders outside quotes.

    `query` is the text for psycopg: each `?` becomes `%s` and every other `%` is doubled,
    so psycopg sends the values as server-side parameters ($1, $2...) and no value ever
    enters the SQL text.
    """

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.placeholders = 0
        self.statements: list[str] = []
        out: list[str] = []
        bare: list[str] = []  # the text outside quotes and comments
        start = 0
        pos = 0
        length = len(sql)
        while pos < length:
            char = sql[pos]
            nxt = sql[pos + 1] if pos + 1 < length else ""
            if char == "'":
                escaped = (
                    pos > 0
                    and sql[pos - 1] in "eE"
                    and (pos < 2 or not (sql[pos - 2].isalnum() or sql[pos - 2] == "_"))
                )
                end = self._string_end(pos, backslash=escaped)
            elif char == '"':
                end = self._quoted_end(pos, '"')
            elif char == "-" and nxt == "-":
                newline = sql.find("\n", pos)
                end = length if newline < 0 else newline + 1
            elif char == "/" and nxt == "*":
                end = self._block_comment_end(pos)
            elif char == "$" and (match := _DOLLAR_TAG.match(sql, pos)) and not self._is_identifier_char(pos - 1):
                tag = match.group(0)
                close = sql.find(tag, match.end())
                if close < 0:
                    raise InvalidArgument("unterminated dollar-quoted string", reason="SQL_SYNTAX")
                end = close + len(tag)
            elif char == "?":
                self.placeholders += 1
                out.append("%s")
                pos += 1
                continue
            elif char == ";":
                self.statements.append(sql[start:pos])
                start = pos + 1
                out.append(";")
                pos += 1
                continue
            else:
                end = pos + 1
                bare.append(char)
            out.append(sql[pos:end].replace("%", "%%"))
            pos = end
        self.statements.append(sql[start:])
        self.statements = [s for s in self.statements if not is_blank(s)]
        self.query = "".join(out)
        # RETURNING is reserved in PostgreSQL: as a bare word it can only be the clause.
        self.returning = bool(_RETURNING.search("".join(bare)))

    def _is_identifier_char(self, pos: int) -> bool:
        return pos >= 0 and (self.sql[pos].isalnum() or self.sql[pos] == "_")

    def _string_end(self, pos: int, *, backslash: bool) -> int:
        sql, length = self.sql, len(self.sql)
        pos += 1
        while pos < length:
            char = sql[pos]
            if backslash and char == "\\":
                pos += 2
                continue
            if char == "'":
                if pos + 1 < length and sql[pos + 1] == "'":
                    pos += 2
                    continue
                return pos + 1
            pos += 1
        raise InvalidArgument("unterminated quoted string", reason="SQL_SYNTAX")

    def _quoted_end(self, pos: int, quote: str) -> int:
        sql, length = self.sql, len(self.sql)
        pos += 1
        while pos < length:
            if sql[pos] == quote:
                if pos + 1 < length and sql[pos + 1] == quote:
                    pos += 2
                    continue
                return pos + 1
            pos += 1
        raise InvalidArgument("unterminated quoted identifier", reason="SQL_SYNTAX")

    def _block_comment_end(self, pos: int) -> int:
        # PostgreSQL block comments nest.
        sql, depth = self.sql, 0
        while pos < len(sql):
            if sql.startswith("/*", pos):
                depth += 1
                pos += 2
            elif sql.startswith("*/", pos):
                depth -= 1
                pos += 2
                if depth == 0:
                    return pos
            else:
                pos += 1
        raise InvalidArgument("unterminated block comment", reason="SQL_SYNTAX")


def is_blank(sql: str) -> bool:
    """True when the text holds only whitespace, comments and semicolons."""
    pos = 0
    while True:
        pos = _skip_space_and_comments(sql, pos)
        if pos < len(sql) and sql[pos] == ";":
            pos += 1
            continue
        return pos >= len(sql)
