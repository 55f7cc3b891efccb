"""The one exception type a user ever sees, as a single line."""

from __future__ import annotations


class TunhelperError(Exception):
    """A failure with a one-line message saying what went wrong and what to do.

    Anything else escaping to the top is a bug; the command line turns it into one
    line too, so a client never sees a traceback.
    """

    exit_code = 1


class UsageError(TunhelperError):
    """Bad arguments: the admin's command line (or authorized_keys) needs fixing."""

    exit_code = 2
