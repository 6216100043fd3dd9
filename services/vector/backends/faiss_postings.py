"""An inverted index from metadata values to internal ids, so a filter becomes an id set
without reading every record: equality is one dictionary lookup, a range scans the
distinct values of one field.

A value held by one vector maps to its id alone, not to a set of one: fields unique to each
vector (a chunk's id, its position) are common, and a set costs ~200 bytes and is one more
object for every full collection to walk, per vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import chain, repeat
from typing import Any

from services.vector.filters import And, Compare, Filter, Not, Or, Scalar, compare_keys, scalar_key

ValueKey = tuple[str, Scalar]
Members = int | set[int]  # the one id holding a value, or the ids of several
# Value types grouped by equality: 1 and 1.0 share a group as they share a key; True would join 1.
_GROUPABLE = {str, int, float, type(None)}


def leaves(metadata: dict[str, Any] | None, prefix: str = "") -> Iterator[tuple[str, ValueKey]]:
    """(dotted path, value key) for every scalar reachable by a dotted path."""
    if not metadata:
        return
    for name, value in metadata.items():
        if "." in name:
            continue  # a dotted path could not address it
        path = prefix + name
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            key = scalar_key(value)
            if key is not None:
                yield path, key


def _as_set(members: Members | None) -> set[int]:
    """The ids of a value as a set (shared with the index when there are several)."""
    if members is None:
        return set()
    return members if isinstance(members, set) else {members}


class Postings:
    def __init__(self) -> None:
        self.by_path: dict[str, dict[ValueKey, Members]] = {}

    def add(self, internal_id: int, metadata: dict[str, Any] | None) -> None:
        for path, key in leaves(metadata):
            values = self.by_path.setdefault(path, {})
            members = values.get(key)
            if members is None:
                values[key] = internal_id
            elif isinstance(members, set):
                members.add(internal_id)
            else:
                values[key] = {members, internal_id}

    def add_many(self, internal_ids: list[int], metadata: list[dict[str, Any]]) -> None:
        """`add` for a batch, a field at a time. A field whose values are all strings, numbers or
        missing (the common case) is grouped by value first, so each distinct value costs one set
        update however many vectors share it; other fields take the general walk."""
        for name in set(chain.from_iterable(metadata)):
            if "." in name:
                continue  # a dotted path could not address it
            column = list(map(dict.get, metadata, repeat(name)))
            if not set(map(type, column)) <= _GROUPABLE:  # bool, object or list: the general walk
                for internal_id, value in zip(internal_ids, column, strict=True):
                    if value is not None:
                        self.add(internal_id, {name: value})
                continue
            groups: defaultdict[str | int | float | None, list[int]] = defaultdict(list)
            for value, internal_id in zip(column, internal_ids, strict=True):
                groups[value].append(internal_id)
            groups.pop(None, None)  # missing, or null: not indexed
            values = self.by_path.setdefault(name, {})
            for value, ids in groups.items():
                key: ValueKey = ("s", value) if type(value) is str else ("n", float(value))  # type: ignore[arg-type]
                members = values.get(key)
                if members is None:
                    values[key] = ids[0] if len(ids) == 1 else set(ids)
                elif isinstance(members, set):
                    members.update(ids)
                else:
                    values[key] = {members, *ids}
            if not values:
                del self.by_path[name]

    def remove(self, internal_id: int, metadata: dict[str, Any] | None) -> None:
        for path, key in leaves(metadata):
            values = self.by_path.get(path)
            if values is None:
                continue
            members = values.get(key)
            if isinstance(members, set):
                members.discard(internal_id)
                if len(members) == 1:
                    values[key] = next(iter(members))
                continue
            if members == internal_id:
                del values[key]
                if not values:
                    del self.by_path[path]

    def evaluate(self, node: Filter, universe: Callable[[], set[int]]) -> set[int]:
        """The ids matching `node`; `universe()` gives every live id (used by negations).
        The result may be shared with the index: callers must not modify it."""
        if isinstance(node, And):
            if not node.children:
                return universe()
            parts = sorted((self.evaluate(child, universe) for child in node.children), key=len)
            result = parts[0]
            for part in parts[1:]:
                if not result:
                    break
                result = result & part
            return result
        if isinstance(node, Or):
            result = set()
            for child in node.children:
                result |= self.evaluate(child, universe)
            return result
        if isinstance(node, Not):
            return universe() - self.evaluate(node.child, universe)
        return self._compare(node, universe)

    def _compare(self, node: Compare, universe: Callable[[], set[int]]) -> set[int]:
        values = self.by_path.get(node.path, {})
        if node.op in ("$eq", "$ne"):
            assert not isinstance(node.value, tuple)
            hit = _as_set(values.get(scalar_key(node.value) or ("", "")))
            return hit if node.op == "$eq" else universe() - hit
        if node.op in ("$in", "$nin"):
            assert isinstance(node.value, tuple)
            hit = set()
            for value in node.value:
                hit |= _as_set(values.get(scalar_key(value) or ("", "")))
            return hit if node.op == "$in" else universe() - hit
        assert not isinstance(node.value, tuple)
        result: set[int] = set()
        for key, members in values.items():
            if not compare_keys(key, node.op, node.value):
                continue
            if isinstance(members, set):
                result |= members
            else:
                result.add(members)
        return result
