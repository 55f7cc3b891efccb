"""When to try again, and where: backoff with jitter, failover order, what never to retry.

OpenSSH >= 9.8 penalises a source that fails authentication or drops connections
(``PerSourcePenalties``): hammering a gateway gets the client blocked. So a refusal
by the server or a failed authentication ends ``connect`` at once, and everything
else waits longer after each failure, up to about a minute.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

BASE = 1.0  # seconds before the first retry (before jitter)
CAP = 60.0

# What ssh prints (exit 255) when retrying cannot help: the key or the host key.
AUTH_FAILURES = re.compile(
    r"Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED"
    r"|Too many authentication failures|No supported authentication methods"
)


def delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` consecutive failed attempts (0: the link was
    just lost). Exponential, capped, with jitter: half of it random, so that clients that
    lost one gateway together do not all come back in the same second."""
    ceiling = min(CAP, BASE * 2 ** min(failures, 16))
    return (rng or random).uniform(ceiling / 2, ceiling)


def order(
    destinations: Sequence[str], shuffle: bool, rng: random.Random | None = None
) -> list[str]:
    """The order in which gateways are tried (given, or shuffled once at start)."""
    ordered = list(destinations)
    if shuffle:
        (rng or random).shuffle(ordered)
    return ordered


def is_auth_failure(ssh_stderr: str) -> bool:
    return AUTH_FAILURES.search(ssh_stderr) is not None


def is_refusal(ssh_stderr: str) -> bool:
    """The server's tunhelper said why it refused (ssh itself never writes this)."""
    return any(line.startswith("tunhelper: ") for line in ssh_stderr.splitlines())
