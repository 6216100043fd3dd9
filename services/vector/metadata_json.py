"""Vector metadata sent as JSON text (the columnar write form): parsed strictly, checked for
size, depth and type, each failure naming the vector.

A batch is parsed by orjson at C speed with one check over all of it; only a batch that fails
that check is walked text by text, to name the vector at fault and the reason. orjson is the
judge of what is JSON (RFC 8259: no NaN or Infinity, no number that overflows a double, no
lone surrogate); the standard library's decoder only words the error when it can.
"""

from __future__ import annotations

import json
from itertools import repeat
from operator import add
from typing import Any

import orjson

from services.runtime.errors import InvalidArgument
from services.vector.model import Metadata

MAX_METADATA_BYTES = 10 * 1024
# Objects and lists inside one metadata object: deeper could not travel back as a Struct (protobuf
# parsers stop at 100 message levels, two per JSON level).
MAX_METADATA_DEPTH = 32
# A text this short cannot nest deeper than the limit (each level takes two characters).
_SHALLOW_LENGTH = 2 * MAX_METADATA_DEPTH + 1
# A text of at most this many characters cannot exceed the size limit in UTF-8.
_SMALL_LENGTH = MAX_METADATA_BYTES // 4
TOO_DEEP = f"nests deeper than {MAX_METADATA_DEPTH} levels"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


_WORDING = json.JSONDecoder(parse_constant=_reject_constant)


def bad_metadata(vid: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"metadata of vector {vid!r} {problem}", reason="INVALID_METADATA", metadata={"id": vid})


def too_large(vid: str, size: int, what: str = "") -> InvalidArgument:
    return InvalidArgument(
        f"metadata of vector {vid!r} is {size} bytes{what}; the limit is {MAX_METADATA_BYTES}",
        reason="METADATA_TOO_LARGE",
        metadata={"id": vid},
    )


def depth(value: Any) -> int:
    """Nesting depth of objects and lists: 1 for a flat object."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
        else:
            continue
        deepest = max(deepest, level)
    return deepest


def to_text(vid: str, metadata: Metadata) -> str:
    """The JSON text of metadata sent as a Struct (the `Vector` form), within the size limit."""
    text = orjson.dumps(metadata)
    # orjson writes NaN and Infinity (which a Struct may carry) as null: where a null appears at
    # all, the standard library, which refuses them, decides.
    if b"null" in text:
        try:
            json.dumps(metadata, allow_nan=False)
        except ValueError as exc:
            raise bad_metadata(vid, "holds NaN or Infinity, which JSON cannot carry") from exc
    if len(text) > MAX_METADATA_BYTES:
        raise too_large(vid, len(text), " serialised")
    return text.decode()


def _brackets(text: str) -> int:
    """An upper bound of the nesting depth (brackets inside strings count too)."""
    return text.count("{") + text.count("[")


def parse_texts(ids: list[str], texts: list[str]) -> tuple[list[Metadata], list[str]]:
    """Each id's metadata object and its JSON text as it will be logged ("{}" for none)."""
    if not texts:
        return [{} for _ in ids], ["{}"] * len(ids)
    if len(texts) != len(ids):
        raise InvalidArgument(
            f"columns.metadata_json has {len(texts)} entries for {len(ids)} ids; give one per id or none",
            reason="INVALID_METADATA",
        )
    try:
        values = list(map(orjson.loads, texts))
    except orjson.JSONDecodeError:
        values = None  # an empty or faulty text: the walk below finds it
    if values is not None and _plain(texts, values):
        return values, texts
    return [parse_one(vid, text) for vid, text in zip(ids, texts, strict=True)], [text or "{}" for text in texts]


def _plain(texts: list[str], values: list[Any]) -> bool:
    """True when every value is an object and no text can be over the size or depth limit:
    one pass at C speed for the whole batch."""
    longest = max(map(len, texts))
    if set(map(type, values)) != {dict} or longest > _SMALL_LENGTH:
        return False
    if longest <= _SHALLOW_LENGTH:
        return True
    opened = map(add, map(str.count, texts, repeat("{")), map(str.count, texts, repeat("[")))
    return max(opened) <= MAX_METADATA_DEPTH


def parse_one(vid: str, text: str) -> Metadata:
    """One metadata text ("" for none), or INVALID_ARGUMENT naming the vector and the fault."""
    if not text:
        return {}
    if len(text) > _SMALL_LENGTH and len(text.encode()) > MAX_METADATA_BYTES:
        raise too_large(vid, len(text.encode()))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_metadata(vid, _json_problem(text, exc)) from exc
    if _brackets(text) > MAX_METADATA_DEPTH and depth(value) > MAX_METADATA_DEPTH:
        raise bad_metadata(vid, TOO_DEEP)
    if type(value) is not dict:
        raise bad_metadata(vid, f"must be a JSON object, not {type(value).__name__}")
    return value


def _json_problem(text: str, error: orjson.JSONDecodeError) -> str:
    """Why orjson refused a text, in the standard library's words when it has them."""
    try:
        value = _WORDING.decode(text)
    except RecursionError:
        return TOO_DEEP
    except ValueError as exc:
        return f"is not valid JSON: {exc}"
    if depth(value) > MAX_METADATA_DEPTH:  # deeper than orjson goes
        return TOO_DEEP
    return f"is not valid JSON: {error}"  # a number beyond a double, or a lone surrogate
