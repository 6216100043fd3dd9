"""Process limits a server lifts when it starts."""

from __future__ import annotations

import logging

log = logging.getLogger("strata.runtime")

# A cap for systems whose hard limit is "unlimited" (macOS refuses a soft limit above OPEN_MAX).
MAX_OPEN_FILES = 1 << 20


def raise_open_file_limit() -> int | None:
    """Lift the soft limit on open files to the hard one, as Go's runtime and most servers do:
    the vector service keeps a few files open per index (its log, and the log and snapshot files
    a cosine index reads its callers' values back from), so a default soft limit of 1,024 would
    cap it at a few hundred indexes. Returns the soft limit now in force, or None where there is
    none to raise (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        for wanted in (target, min(target, 10_240)):  # 10,240: macOS's OPEN_MAX
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                continue
            log.debug("open file limit raised", extra={"from": soft, "to": wanted})
            return wanted
    return soft
