"""Filter trees rendered as Milvus boolean expressions over a JSON `metadata` field.

Milvus compares a missing JSON key as NULL, and NOT of NULL is still not true, which
would make `$ne`/`$nin`/`$not` skip records that lack the field. Every comparison is
therefore guarded with `exists`, so it is plainly true or false and negation behaves as
the filter semantics in `services.vector.filters` require. `in` is not available on JSON
paths everywhere (Milvus Lite), so `$in` becomes a chain of equalities.

Known difference: Milvus compares JSON booleans equal to 0 and 1, so `{"flag": 0}` also
matches `false` there (FAISS keeps booleans and numbers apart).
"""

from __future__ import annotations

import json

from services.vector.filters import And, Compare, Filter, Not, Or, Scalar

# Ids are never empty, so this matches no record (the negation of "every record").
NOTHING = 'vid == ""'
_OPS = {"$eq": "==", "$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    # JSON string escapes (\" \\ \n \t) are what the Milvus expression lexer accepts.
    return json.dumps(value, ensure_ascii=False)


def string_literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def json_path(field: str, path: str) -> str:
    return field + "".join(f"[{string_literal(part)}]" for part in path.split("."))


def _compare(node: Compare, field: str) -> str:
    path = json_path(field, node.path)
    if node.op in ("$in", "$nin"):
        assert isinstance(node.value, tuple)
        hit = " or ".join(f"{path} == {literal(v)}" for v in node.value)
        positive = f"(exists {path} and ({hit}))"
        return positive if node.op == "$in" else f"(not {positive})"
    assert not isinstance(node.value, tuple)
    if node.op == "$ne":
        return f"(not (exists {path} and {path} == {literal(node.value)}))"
    if node.op == "$eq":
        return f"(exists {path} and {path} == {literal(node.value)})"
    # A range across types (a string field against a number) is NULL in Milvus, not false;
    # `like "%"` (true only for strings) keeps the comparison to values of the operand's type.
    kind = f'{path} like "%"' if isinstance(node.value, str) else f'not ({path} like "%")'
    return f"(exists {path} and {kind} and {path} {_OPS[node.op]} {literal(node.value)})"


def render(node: Filter, field: str = "metadata") -> str:
    """The Milvus expression for `node`; "" means every record."""
    if isinstance(node, And):
        parts = [render(child, field) for child in node.children]
        parts = [p for p in parts if p]
        return "" if not parts else parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
    if isinstance(node, Or):
        parts = [render(child, field) for child in node.children]
        return "" if not all(parts) else "(" + " or ".join(parts) + ")"
    if isinstance(node, Not):
        inner = render(node.child, field)
        return NOTHING if not inner else f"(not {inner})"
    return _compare(node, field)


def combine(*parts: str) -> str:
    """AND of non-empty expressions."""
    kept = [p for p in parts if p]
    return " and ".join(f"({p})" for p in kept) if len(kept) > 1 else (kept[0] if kept else "")
