"""Backup and restore of a whole Strata stack through the layer contracts only.

    python -m gateway.backup create DIR     # metadata dumps, vector copies, blob copies, manifest.json
    python -m gateway.backup restore DIR    # onto a fresh stack (--force replaces what is there)

Because only the public gRPC contracts are used, a backup taken from one set of backends
(SQLite, FAISS, local disk) restores onto any other (PostgreSQL, Milvus, S3).
"""

from __future__ import annotations

from gateway.backup.create import create_backup
from gateway.backup.errors import BackupError, RestoreRefused
from gateway.backup.layers import Layers
from gateway.backup.restore import restore_backup

__all__ = ["BackupError", "Layers", "RestoreRefused", "create_backup", "restore_backup"]
