"""The one exception type that the CLI turns into a single clear line and exit code 2."""

from __future__ import annotations

__all__ = ["InputsError", "UserError", "first_line"]


class UserError(ValueError):
    """Bad input from the user: the message names the problem and the fix.

    >>> raise UserError("unknown task 'sst3'; choose one of: sst2, mrpc")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: unknown task 'sst3'; choose one of: sst2, mrpc
    """


class InputsError(UserError):
    """A run's inputs failed to load or check (data, model, processor, freeze spec, flags):
    raised before training starts. A study records such a failure as ``inputs``: once its
    preflight passes again (the data or hub is back), rerunning the study retries the run."""


def first_line(err: BaseException) -> str:
    """What to quote of an error inside a one-line message: its first non-blank line, else
    its type's name.

    >>> first_line(OSError("no such file\\nmore")), first_line(EOFError())
    ('no such file', 'EOFError')
    """
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
