"""An inverted index from metadata values to internal ids, so a filter becomes an id set
without reading every record: equality is one dictionary lookup, a range scans the
distinct values of one field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from services.vector.filters import And, Compare, Filter, Not, Or, Scalar, compare_keys, scalar_key

ValueKey = tuple[str, Scalar]


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


class Postings:
    def __init__(self) -> None:
        self.by_path: dict[str, dict[ValueKey, set[int]]] = {}

    def add(self, internal_id: int, metadata: dict[str, Any] | None) -> None:
        for path, key in leaves(metadata):
            self.by_path.setdefault(path, {}).setdefault(key, set()).add(internal_id)

    def add_many(self, internal_ids: list[int], metadata: list[dict[str, Any]]) -> None:
        """`add` for a batch; flat string and number fields (the common case) take a fast path."""
        by_path = self.by_path
        for internal_id, fields in zip(internal_ids, metadata, strict=True):
            if not fields:
                continue
            for name, value in fields.items():
                kind = type(value)
                if kind is str:
                    key: ValueKey = ("s", value)
                elif kind is float or kind is int:
                    key = ("n", float(value))
                else:
                    self.add(internal_id, {name: value})  # bool, object, list or null: the general walk
                    continue
                if "." in name:
                    continue  # a dotted path could not address it
                values = by_path.get(name)
                if values is None:
                    values = by_path[name] = {}
                ids = values.get(key)
                if ids is None:
                    values[key] = {internal_id}
                else:
                    ids.add(internal_id)

    def remove(self, internal_id: int, metadata: dict[str, Any] | None) -> None:
        for path, key in leaves(metadata):
            values = self.by_path.get(path)
            if values is None:
                continue
            ids = values.get(key)
            if ids is not None:
                ids.discard(internal_id)
                if not ids:
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
            hit = values.get(scalar_key(node.value) or ("", ""), set())
            return hit if node.op == "$eq" else universe() - hit
        if node.op in ("$in", "$nin"):
            assert isinstance(node.value, tuple)
            hit = set()
            for value in node.value:
                hit |= values.get(scalar_key(value) or ("", ""), set())
            return hit if node.op == "$in" else universe() - hit
        assert not isinstance(node.value, tuple)
        result: set[int] = set()
        for key, ids in values.items():
            if compare_keys(key, node.op, node.value):
                result |= ids
        return result
