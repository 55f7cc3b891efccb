"""The admin's ``--up`` and ``--down`` commands.

Run without a shell (argv from the admin's authorized_keys line, split with shlex),
with default signal dispositions and an empty signal mask (so ``timeout`` and ``kill``
work in a down hook), bounded in time (the whole process group is killed at the
limit), with a clean, documented environment: nothing the client sent reaches a
hook. Their output goes to syslog, never to the client's stdout, which carries the
announcement.

Environment (all values strings; empty when not applicable):
``TUNHELPER_EVENT`` (up or down), ``TUNHELPER_DEVICE``, ``TUNHELPER_MODE`` (tun or
tap), ``TUNHELPER_ADDRESS`` (the client's), ``TUNHELPER_GATEWAY``, ``TUNHELPER_PREFIX``,
``TUNHELPER_ADDRESS6``, ``TUNHELPER_GATEWAY6``, ``TUNHELPER_PREFIX6`` (the IPv6 side
whenever the session has one: dual stack, or an IPv6-only pool, where they repeat
``TUNHELPER_ADDRESS`` and so on; empty otherwise), ``TUNHELPER_POOL`` (the IPv4 pool
of a dual-stack session), ``TUNHELPER_CLIENT`` (identity), ``TUNHELPER_REMOTE_ADDRESS`` and
``TUNHELPER_REMOTE_PORT`` (the client's end of the ssh connection), and at down
``TUNHELPER_BYTES_IN`` / ``TUNHELPER_BYTES_OUT`` (received from / sent to the client
through the device) and ``TUNHELPER_REASON``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping

from tunhelper import log
from tunhelper.errors import TunhelperError

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def environment(values: Mapping[str, object]) -> dict[str, str]:
    """The hook's whole environment: a fixed PATH and the TUNHELPER_* values."""
    env = {"PATH": PATH}
    for key, value in values.items():
        env[f"TUNHELPER_{key.upper()}"] = "" if value is None else str(value)
    return env


def remote(ssh_connection: str | None) -> tuple[str, str]:
    """The client's address and port from sshd's ``SSH_CONNECTION``, if well formed."""
    import ipaddress

    parts = (ssh_connection or "").split()
    if len(parts) == 4 and parts[1].isdigit():
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(parts[0])), parts[1]
    return "", ""


_RESET = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE)


def _default_signals() -> None:
    """In the hook's child: default dispositions and an empty mask.

    A down hook runs after the helper ignores and blocks its end signals, and ignored
    signals survive exec: ``timeout`` or ``kill`` inside the hook would do nothing.
    """
    for s in _RESET:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def run(event: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
    """Run a hook; a failure or timeout is a :class:`TunhelperError` naming it."""
    what = f"{event} hook {argv[0]}"
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills it all
            cwd="/",
            preexec_fn=_default_signals,
        )
    except OSError as e:
        raise TunhelperError(f"{what} could not run: {e.strerror}") from None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TunhelperError(f"{what} did not finish within {timeout:g}s") from None
    text = output.decode("utf-8", "replace").strip()
    if text:
        log.info(f"{what}: {text[:500]}")
    if proc.returncode != 0:
        first = text.splitlines()[-1][:200] if text else ""
        raise TunhelperError(
            f"{what} failed (exit {proc.returncode}){': ' + first if first else ''}"
        )
