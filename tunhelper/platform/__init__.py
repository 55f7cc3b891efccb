"""The operating-system side of tunhelper, behind one interface chosen once at import.

As in psutil, the portable core calls only the names exported here: the functions of
the providers in :mod:`.contract`, one per concern (vpn-slice's providers). Each
backend (``linux/``, ``freebsd/``) provides every one with the same signature
(``tests/test_platform_contract.py`` holds them to it) and declares up front, in
``CAPABILITIES``, which optional ones it really does (:func:`lacks`), so a missing one
is refused when a session starts or reported by doctor; docs/platforms.md says what was
verified on each.

Every exported function is wrapped once at this boundary, as psutil's
``wrap_exceptions``: whatever goes wrong in the operating system arrives as
:class:`PlatformError` (an ``OSError`` with ``errno`` and a one-line ``strerror``), so
callers catch that and nothing else. Only ``OSError``, ``ValueError`` and the backend's
declared native errors are translated: an exception a signal handler raises passes
through untouched.

Only the backend for this platform is imported, and importing it must stay cheap (the
keeper imports it for the life of a session): heavy libraries (pyroute2, psutil)
are imported only inside the functions that need them, and the path to the
announcement imports no pyroute2.
"""

from __future__ import annotations

import functools
import sys

from tunhelper.platform.base import (
    DEVICE_GONE,
    PROCESS_ENDED,
    DeviceInfo,
    PlatformError,
    SessionDevice,
)
from tunhelper.platform.contract import CONCERNS, OPTIONAL, names

if sys.platform.startswith("linux"):
    from tunhelper.platform import linux as _backend
elif sys.platform.startswith("freebsd"):
    from tunhelper.platform import freebsd as _backend
else:
    raise ImportError(f"tunhelper does not support {sys.platform} (Linux and FreeBSD only)")


def wrap_errors(function, native: tuple[type[BaseException], ...] = ()):
    """``function`` with OSError, ValueError and ``native`` errors as PlatformError."""
    translated = (OSError, ValueError, *native)

    @functools.wraps(function)
    def boundary(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PlatformError:
            raise
        except translated as e:
            raise PlatformError.of(e) from e

    return boundary


NAMES = tuple(name for concern in CONCERNS.values() for name in names(concern))
globals().update(
    {name: wrap_errors(getattr(_backend, name), _backend.NATIVE_ERRORS) for name in NAMES}
)


CAPABILITIES: frozenset[str] = _backend.CAPABILITIES


def lacks(*capabilities: str) -> list[str]:
    """Of the optional capabilities asked for, what this platform does not do, each as
    one line ("IPv6 pools (...) are not supported on freebsd"), for a refusal at start
    or a doctor finding."""
    return [
        f"{OPTIONAL[c]}: not supported on {sys.platform}"
        for c in capabilities
        if c not in CAPABILITIES
    ]


_LAZY = {
    "client": ("tunhelper.platform.linux.client", "tunhelper.platform.freebsd.client"),
    "routes_view": (
        "tunhelper.platform.linux.routes_view",
        "tunhelper.platform.freebsd.routes_view",
    ),
}


def __getattr__(name: str):
    """``platform.client``: the client side (full tunnel, kill-switch);
    ``platform.routes_view``: the host's own networks, which a gateway's announcement
    is held against. Imported on use only, so the server and the keeper never load them."""
    if name in _LAZY:
        import importlib

        linux, freebsd = _LAZY[name]
        return importlib.import_module(linux if sys.platform.startswith("linux") else freebsd)
    raise AttributeError(name)


__all__ = [  # built from the contract
    "DEVICE_GONE",
    "PROCESS_ENDED",
    "DeviceInfo",
    "PlatformError",
    "SessionDevice",
    "CAPABILITIES",
    "lacks",
    *NAMES,
]
