"""FreeBSD: one module per concern, as ``linux/``, their functions gathered here.

- :mod:`.command`: every command through one runner (argv, no shell, clean environment);
- :mod:`.proc`: procstat discovery, process identity, the boot id;
- :mod:`.links`: ifconfig and route(8): addresses, bridges, routes, counters;
- :mod:`.sysctl`, :mod:`.sourcefilter`, :mod:`.dns`: not done here yet (see
  :data:`CAPABILITIES`);
- :mod:`.watch`: waiting for the end of a session (kqueue);
- :mod:`.checks`: what ``tunhelper doctor`` asks of the host;
- :mod:`.client`: the client side, reached as ``platform.client``.

Importable anywhere (the tests run it on Linux): kqueue is looked up when used, and
psutil is imported only inside the functions that need it. Importing this package
imports only the standard library's light modules: the keeper imports it on FreeBSD.
"""

# ruff: noqa: F401 - the names are re-exported for the boundary, which lists them once

from __future__ import annotations

from tunhelper.platform.freebsd.checks import (
    forwarding,
    persistent_devices,
    source_validation,
    tun_node,
)
from tunhelper.platform.freebsd.dns import apply_dns, revert_dns
from tunhelper.platform.freebsd.links import (
    add_address,
    add_port,
    add_route,
    bridge_ports,
    configure_address,
    configure_p2p,
    create_bridge,
    deconfigure_address,
    deconfigure_p2p,
    delete_bridge,
    delete_route,
    device_info,
    link_counters,
    our_routes,
    remove_port,
)
from tunhelper.platform.freebsd.proc import (
    boot_id,
    end_process,
    held_devices,
    holds_pipe,
    open_regular,
    process_start,
    same_process,
)
from tunhelper.platform.freebsd.sourcefilter import (
    guard_link,
    remove_stale_guards,
    stale_guards,
    unguard_link,
)
from tunhelper.platform.freebsd.sysctl import strict_rp_filter
from tunhelper.platform.freebsd.watch import wait_for_end

# This backend's own errors are PlatformErrors already: the boundary has none to translate.
NATIVE_ERRORS: tuple[type[Exception], ...] = ()

# Of the optional capabilities (platform.contract.OPTIONAL), those done here: none yet.
# IPv6 is unverified (docs/platforms.md); reverse-path filtering and source validation
# would be pf/ipfw rules; no resolver manager is driven.
CAPABILITIES: frozenset[str] = frozenset()
