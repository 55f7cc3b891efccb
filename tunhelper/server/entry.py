"""The forced command's entry point, kept apart from the session so that the end
signals are caught before the session's libraries are even imported: from the first
instant, a signal unwinds like an error and ends the ssh connection."""

from __future__ import annotations

import os

from tunhelper import log, signals
from tunhelper.errors import TunhelperError


def serve_command(argv: list[str]) -> int:
    """Parse the forced command's settings (argv and the config file), then serve."""
    signals.catch_end_signals()  # before anything is taken
    from tunhelper.server import session, teardown
    from tunhelper.settings import serve_settings

    try:
        settings = serve_settings(argv)
        if os.geteuid() != 0:
            raise TunhelperError("must run as root: it configures network devices")
    except (TunhelperError, signals.Interrupted) as e:
        log.error(str(e) if isinstance(e, TunhelperError) else f"interrupted by {e}")
        teardown.end_connection(None)
        return getattr(e, "exit_code", 1)
    return session.serve(settings, os.environ)
