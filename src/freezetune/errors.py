"""The one exception type that the CLI turns into a single clear line and exit code 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input from the user: the message names the problem and the fix.

    >>> raise UserError("unknown task 'sst3'; choose one of: sst2, mrpc")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: unknown task 'sst3'; choose one of: sst2, mrpc
    """
