"""`python -m gateway.backup create DIR` / `python -m gateway.backup restore DIR [--force]`.

The layers are found through STRATA_VECTOR_ADDR, STRATA_METADATA_ADDR and STRATA_BLOB_ADDR
(defaults 127.0.0.1:50052..50054), the same variables the gateway reads.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.backup.create import DEFAULT_ATTEMPTS, create_backup
from gateway.backup.errors import BackupError
from gateway.backup.restore import restore_backup


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.backup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="back up every database, vector index and blob bucket into DIR")
    create.add_argument("directory", metavar="DIR", help="new (or empty) directory for the backup")
    create.add_argument(
        "--attempts",
        type=int,
        default=DEFAULT_ATTEMPTS,
        help=f"backups to try while concurrent writes make one inconsistent (default {DEFAULT_ATTEMPTS})",
    )
    restore = commands.add_parser("restore", help="restore the backup in DIR onto a fresh stack")
    restore.add_argument("directory", metavar="DIR", help="a directory written by `create`")
    restore.add_argument(
        "--force", action="store_true", help="replace databases, indexes and buckets that already hold data"
    )
    for command in (create, restore):
        command.add_argument("--quiet", action="store_true", help="print only the final summary")
    args = parser.parse_args(argv)
    progress = (lambda _m: None) if args.quiet else _say
    try:
        if args.command == "create":
            manifest = create_backup(args.directory, attempts=args.attempts, progress=progress)
        else:
            manifest = restore_backup(args.directory, force=args.force, progress=progress)
    except BackupError as exc:
        _say(f"error: {exc}")
        return 1
    summary = {"command": args.command, "directory": args.directory, **manifest["counts"]}
    if args.command == "create":
        summary["attempts"] = manifest["attempts"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
