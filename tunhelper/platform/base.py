"""Plain data shared by every platform module.

Named tuples rather than dataclasses: the slim holding process imports this module,
and ``dataclasses`` alone would add more than a megabyte to every held session.
"""

from __future__ import annotations

from collections import namedtuple

# Why ``wait_for_end`` returned.
PROCESS_ENDED = "process"  # the process holding the device exited
DEVICE_GONE = "device"  # the device was deleted

DeviceInfo = namedtuple("DeviceInfo", ["name", "index", "mode", "persistent"], defaults=[False])
DeviceInfo.__doc__ = """A tun/tap device as the kernel reports it now.

``index`` is kept because names are reused: when a session's tun0 goes away the next
session may get a new tun0, and only the index tells them apart. ``mode`` is "tun"
(layer 3) or "tap" (layer 2). ``persistent``: the device outlives its file descriptors,
so someone made it before sshd attached to it (a client can ask for its unit with
``-w any:N``): it is never a session's own.
"""

SessionDevice = namedtuple("SessionDevice", ["device", "holder_pid", "holder_start"])
SessionDevice.__doc__ = """A session's device and the process holding it.

The holder's exit ends the session; its start time guards against a reused pid.
"""
