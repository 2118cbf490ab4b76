"""User-facing errors: bad params, missing data, corrupt shards, a full disk.

A ``UserError`` names the problem and the fix; stage scripts turn it into one clear
message and exit status 2 instead of a traceback. Writing errors the user must fix (a full
disk, a read-only folder, an output path that is a folder) are reported the same way,
naming the path.
"""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix (params, paths, data); the message says how."""


_FIXES = {
    errno.ENOSPC: "free disk space and re-run",
    errno.EDQUOT: "free space within your disk quota and re-run",
    errno.EACCES: "make it writable (or run as its owner) and re-run",
    errno.EPERM: "make it writable (or run as its owner) and re-run",
    errno.EROFS: "the file system is read-only: write the outputs elsewhere",
    errno.EISDIR: "remove the folder or choose another output path",
    errno.ENOTDIR: "a parent of the path is a file: remove it or choose another output path",
}


def describe_os_error(err: OSError) -> str | None:
    """One line for the I/O errors a user must fix, or None for the others (bugs)."""
    fix = _FIXES.get(err.errno)
    if fix is None:
        return None
    where = err.filename or "an output file"
    return f"cannot write {where}: {err.strerror or 'I/O error'}; {fix}"


def exit_on_user_error(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main`` so a ``UserError`` (or a disk/permission error) prints
    ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            message = describe_os_error(err)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper
