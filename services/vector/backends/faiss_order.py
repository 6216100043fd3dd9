"""Every key of an index in (namespace, id) order, for ListVectors pages.

Keys ((namespace, id) tuples, as `faiss_records` stores them) sort in the contract's byte order
by their natural order: Python orders str by code point, the order of their UTF-8 bytes. The
sorted list is built on the first page anyone asks for and then kept: writes only note the keys
they add and remove, and the next page folds those in (a sort of the added keys, a linear merge
and a filter). So paging through an index while it is written to does not sort the whole index
for every page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from services.vector.backends.faiss_records import Key

# Changes kept for the next fold before the list is dropped instead (at least this many, or
# half the list).
FOLD_LIMIT = 65_536


class KeyOrder:
    def __init__(self) -> None:
        self._sorted: list[Key] | None = None
        self._added: set[Key] = set()
        self._removed: set[Key] = set()
        self._fold = threading.Lock()  # readers fold changes in; two at once must not

    @property
    def tracking(self) -> bool:
        """Whether writes need to report their changes (only once a page was listed)."""
        return self._sorted is not None

    def changed(self, added: Iterable[Key] = (), removed: Iterable[Key] = ()) -> None:
        """Keys new to the index and keys gone from it; the caller holds readers off."""
        if self._sorted is None:
            return
        for key in removed:
            if key in self._added:
                self._added.discard(key)  # added and removed since the fold: never in the list
            else:
                self._removed.add(key)
        for key in added:
            if key in self._removed:
                self._removed.discard(key)  # removed and added back: still in the list
            else:
                self._added.add(key)
        if len(self._added) + len(self._removed) > max(FOLD_LIMIT, len(self._sorted) // 2):
            # Nobody has listed for a while: stop tracking; the next page sorts afresh.
            self._sorted, self._added, self._removed = None, set(), set()

    def keys(self, every_key: Callable[[], Iterable[Key]]) -> list[Key]:
        """The sorted keys (callers must not modify the list); the caller holds writers off."""
        with self._fold:
            if self._sorted is None:
                self._sorted = sorted(every_key())
            elif self._added or self._removed:
                keys = self._sorted
                if self._removed:
                    removed = self._removed
                    keys = [key for key in keys if key not in removed]
                else:
                    keys = list(keys)  # a reader may still be walking the old list
                keys.extend(self._added)
                keys.sort()  # one sorted run plus the added keys: sorts those and merges, O(n)
                self._sorted = keys
            self._added, self._removed = set(), set()
            return self._sorted
