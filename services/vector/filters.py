"""Metadata filters: parsed once into a small tree that every backend evaluates its own way.

A filter is a JSON-like object. Field keys (dotted paths reach nested objects) map to a
scalar (equality) or to an object of operators; `$and`/`$or` take lists of filters and
`$not` takes one filter. Semantics every backend must honour:

- Scalars are strings, numbers and booleans; a boolean never equals a number.
- `$eq`, `$in` and the range operators match only when the field holds a scalar of a
  comparable type (numbers with numbers, strings with strings by code point).
- `$ne` and `$nin` are the negations of `$eq` and `$in`: they match a missing field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import InvalidArgument

Scalar = str | float | bool

COMPARISONS = ("$eq", "$ne", "$in", "$nin", "$lt", "$lte", "$gt", "$gte")
RANGES = ("$lt", "$lte", "$gt", "$gte")
MAX_DEPTH = 16
MAX_IN_VALUES = 1024
MAX_PATH_BYTES = 512


@dataclass(frozen=True)
class Compare:
    path: str
    op: str  # one of COMPARISONS
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class And:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    child: Filter


Filter = Compare | And | Or | Not


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid filter: {message}", reason="INVALID_FILTER")


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise _invalid(f"{where} must be a finite number")
        return number
    raise _invalid(f"{where} must be a string, number or boolean, not {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _check_path(path: str) -> None:
    if not path or any(not part for part in path.split(".")):
        raise _invalid(f"field name {path!r} must be non-empty dotted segments")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise _invalid(f"field name {path[:40]!r}... is longer than {MAX_PATH_BYTES} bytes")


def _field(path: str, spec: Any) -> Filter:
    _check_path(path)
    if not isinstance(spec, dict):
        return Compare(path, "$eq", _scalar(spec, f"the value of {path!r}"))
    if not spec:
        raise _invalid(f"the operators of {path!r} are empty")
    parts: list[Filter] = []
    for op, operand in spec.items():
        where = f"{path!r} {op}"
        if op not in COMPARISONS:
            raise _invalid(f"unknown operator {op!r} on {path!r}; expected one of {', '.join(COMPARISONS)}")
        if op in ("$in", "$nin"):
            if not isinstance(operand, list | tuple) or not operand:
                raise _invalid(f"{where} needs a non-empty list")
            if len(operand) > MAX_IN_VALUES:
                raise _invalid(f"{where} has {len(operand)} values; at most {MAX_IN_VALUES}")
            parts.append(Compare(path, op, tuple(_scalar(v, f"each value of {where}") for v in operand)))
        elif op in RANGES:
            value = _scalar(operand, where)
            if isinstance(value, bool):
                raise _invalid(f"{where} needs a number or a string, not a boolean")
            parts.append(Compare(path, op, value))
        else:
            parts.append(Compare(path, op, _scalar(operand, where)))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _node(spec: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise _invalid(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise _invalid(f"expected an object, got {_kind(spec)}")
    if not spec:
        return And(())
    parts: list[Filter] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list | tuple) or not value:
                raise _invalid(f"{key} needs a non-empty list of filters")
            children = tuple(_node(child, depth + 1) for child in value)
            parts.append(And(children) if key == "$and" else Or(children))
        elif key == "$not":
            parts.append(Not(_node(value, depth + 1)))
        elif key.startswith("$"):
            raise _invalid(f"unknown operator {key!r} at the top level; expected a field, $and, $or or $not")
        else:
            parts.append(_field(key, value))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse(spec: Any) -> Filter:
    """Check a JSON-like filter and return its tree; InvalidArgument names what is wrong."""
    return _node(spec, 0)


def lookup(metadata: dict[str, Any] | None, path: str) -> Any:
    """The value at a dotted path, or None when any segment is missing."""
    node: Any = metadata
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def scalar_key(value: Any) -> tuple[str, Scalar] | None:
    """A hashable key that keeps booleans, numbers and strings apart; None for non-scalars."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


def compare_keys(stored: tuple[str, Scalar], op: str, operand: Scalar) -> bool:
    """Whether a stored scalar key satisfies a range operator against operand."""
    want = scalar_key(operand)
    if want is None or want[0] != stored[0] or stored[0] == "b":
        return False
    a, b = stored[1], want[1]
    if op == "$lt":
        return a < b  # type: ignore[operator]
    if op == "$lte":
        return a <= b  # type: ignore[operator]
    if op == "$gt":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


def matches(node: Filter, metadata: dict[str, Any] | None) -> bool:
    """Reference evaluation of a filter against one record's metadata."""
    if isinstance(node, And):
        return all(matches(child, metadata) for child in node.children)
    if isinstance(node, Or):
        return any(matches(child, metadata) for child in node.children)
    if isinstance(node, Not):
        return not matches(node.child, metadata)
    stored = scalar_key(lookup(metadata, node.path))
    if node.op in ("$eq", "$ne"):
        hit = stored is not None and stored == scalar_key(node.value)
        return hit if node.op == "$eq" else not hit
    if node.op in ("$in", "$nin"):
        assert isinstance(node.value, tuple)
        hit = stored is not None and stored in {scalar_key(v) for v in node.value}
        return hit if node.op == "$in" else not hit
    assert not isinstance(node.value, tuple)
    return stored is not None and compare_keys(stored, node.op, node.value)
