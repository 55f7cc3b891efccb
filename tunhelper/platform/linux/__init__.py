"""Linux: one module per concern, their functions gathered here for the boundary.

- :mod:`.proc`: /proc and sysfs discovery, process identity, the boot id;
- :mod:`.rtnetlink`: the two requests of ``configure_p2p`` and link-deletion parsing,
  sent and read without pyroute2 (the connect path's time target, issue 5);
- :mod:`.links`: everything else configured through pyroute2 (loaded lazily, lean);
- :mod:`.sysctl`: strict reverse-path filtering (rp_filter) on a session's tun;
- :mod:`.sourcefilter`: the source guard, per-session source validation (an nftables
  netdev chain);
- :mod:`.dns`: the client's resolver manager;
- :mod:`.watch`: waiting for the end of a session (pidfd + netlink);
- :mod:`.checks`: what ``tunhelper doctor`` asks of the host;
- :mod:`.client`: the client side, reached as ``platform.client``.

Importing this package imports only the standard library's light modules: the slim
keeper imports it for the life of a session.
"""

# ruff: noqa: F401 - the names are re-exported for the boundary, which lists them once

from __future__ import annotations

from tunhelper.platform.linux.checks import (
    forwarding,
    persistent_devices,
    source_validation,
    tun_node,
)
from tunhelper.platform.linux.dns import apply_dns, revert_dns
from tunhelper.platform.linux.links import (
    add_address,
    add_port,
    add_route,
    bridge_ports,
    configure_address,
    create_bridge,
    deconfigure_address,
    deconfigure_p2p,
    delete_bridge,
    delete_route,
    link_counters,
    our_routes,
    remove_port,
)
from tunhelper.platform.linux.proc import (
    boot_id,
    device_info,
    end_process,
    held_devices,
    holds_pipe,
    open_regular,
    process_start,
    same_process,
)
from tunhelper.platform.linux.rtnetlink import configure_p2p
from tunhelper.platform.linux.sourcefilter import (
    guard_link,
    remove_stale_guards,
    stale_guards,
    unguard_link,
)
from tunhelper.platform.linux.sysctl import strict_rp_filter
from tunhelper.platform.linux.watch import wait_for_end

# Errors of this backend's own that the boundary turns into PlatformError (pyroute2's
# NetlinkError is translated in .links, where it is raised).
NATIVE_ERRORS: tuple[type[Exception], ...] = ()

# Of the optional capabilities (platform.contract.OPTIONAL), those done here: all.
CAPABILITIES: frozenset[str] = frozenset({"ipv6", "rp_filter", "source_guard", "dns"})
