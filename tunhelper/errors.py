"""The one exception type a user ever sees, as a single line, with the reason it is
counted under when it refuses a session."""

from __future__ import annotations

# Every reason a refusal is counted under; anything else is "other". Fixed, so the
# counter file and the metrics' label set stay bounded whatever the messages say.
REASONS = (
    "no_device",  # sshd opened no tunnel for the session (ssh without -w, restrict, ...)
    "pool_exhausted",  # every address of the pool held by a live session
    "address_taken",  # the key's reserved --address held by another live session
    "max_leases",  # the client identity holds --max-leases addresses already
    "usage",  # the forced command's arguments are wrong (the admin's line)
    "database",  # the lease database or state directory unusable, locked or full
    "other",
)


class TunhelperError(Exception):
    """A failure with a one-line message saying what went wrong and what to do.

    ``reason`` (one of :data:`REASONS`) is what the forced command counts a refusal
    under: said where the error is raised, by its class or by the raiser, never
    guessed from the message. Anything else escaping to the top is a bug; the command
    line turns it into one line too, so a client never sees a traceback.
    """

    exit_code = 1
    reason = "other"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            assert reason in REASONS, reason
            self.reason = reason


class UsageError(TunhelperError):
    """Bad arguments: the admin's command line (or authorized_keys) needs fixing."""

    exit_code = 2
    reason = "usage"
