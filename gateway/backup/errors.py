"""What a backup or restore reports when it cannot do its job."""

from __future__ import annotations


class BackupError(Exception):
    """A backup or restore failed; the message says what and where."""


class RestoreRefused(BackupError):
    """The target stack already holds data that a restore would overwrite (use force)."""

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        listed = "\n  ".join(conflicts)
        super().__init__(
            f"refusing to restore: the target stack is not fresh (use --force to replace what is there):\n  {listed}"
        )
