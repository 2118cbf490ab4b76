"""User-facing errors: bad params, missing data, corrupt shards.

A ``UserError`` names the problem and the fix; stage scripts turn it into one clear
message and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix (params, paths, data); the message says how."""


def exit_on_user_error(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main`` so a ``UserError`` prints ``error: ...`` and exits 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
