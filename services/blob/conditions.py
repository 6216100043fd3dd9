"""Preconditions (if_match / if_none_match) and byte ranges, judged against an object's info."""

from __future__ import annotations

from dataclasses import dataclass

from services.blob import names
from services.blob.backends.base import ObjectInfo
from services.runtime.errors import FailedPrecondition, InvalidArgument, OutOfRange


@dataclass(frozen=True)
class Conditions:
    if_match: str = ""
    if_none_match: str = ""

    def check(self, current: ObjectInfo | None, what: str) -> None:
        """Raise FailedPrecondition unless the conditions hold for `current` (None: no object)."""
        if self.if_match:
            wanted = names.etag(self.if_match)
            if current is None:
                raise FailedPrecondition(
                    f"if_match {wanted!r} failed: {what} does not exist", reason="PRECONDITION_FAILED"
                )
            if wanted not in ("*", current.etag):
                raise FailedPrecondition(
                    f"if_match {wanted!r} failed: {what} has ETag {current.etag!r}",
                    reason="PRECONDITION_FAILED",
                    metadata={"etag": current.etag},
                )
        if self.if_none_match and current is not None:
            wanted = names.etag(self.if_none_match)
            if wanted == "*":
                raise FailedPrecondition(
                    f"if_none_match '*' failed: {what} already exists",
                    reason="PRECONDITION_FAILED",
                    metadata={"etag": current.etag},
                )
            if wanted == current.etag:
                raise FailedPrecondition(
                    f"if_none_match {wanted!r} failed: {what} has that ETag",
                    reason="PRECONDITION_FAILED",
                    metadata={"etag": current.etag},
                )


def resolve_range(size: int, offset: int, length: int, suffix_length: int) -> tuple[int, int]:
    """(offset, length) of the bytes to send for a requested range of an object of `size` bytes."""
    if offset < 0 or length < 0 or suffix_length < 0:
        raise InvalidArgument(
            f"range offset={offset} length={length} suffix_length={suffix_length} has a negative value",
            reason="INVALID_RANGE",
        )
    if suffix_length:
        if offset or length:
            raise InvalidArgument(
                "range suffix_length excludes offset and length; send one or the other", reason="INVALID_RANGE"
            )
        take = min(suffix_length, size)
        return size - take, take
    if offset >= size and (offset or length):
        raise OutOfRange(
            f"range starts at byte {offset} but the object has {size} bytes",
            reason="RANGE_NOT_SATISFIABLE",
            metadata={"size": str(size)},
        )
    end = size if length == 0 else min(size, offset + length)
    return offset, end - offset
