"""User-facing errors.

Anything a user can cause (a missing mirror, a malformed file, an unknown model, ...) raises
`UserError` with a message that says what is wrong and what to do. Stage CLIs catch it through
`stage_main` and exit with status 2 and that message instead of a traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """An error caused by input or configuration; its message is shown to the user as is."""


def stage_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's `main` so that a `UserError` prints `error: ...` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return int(rc or 0)

    return wrapper
